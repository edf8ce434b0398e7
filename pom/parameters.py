"""The one parameter counter of the project (recipes, tests, tools, benchmarks).

Example
-------
>>> import torch
>>> count_parameters(torch.nn.Linear(3, 2))
8
>>> count_parameters(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1))
11

Authors
 * pom-speech contributors 2025
"""


def count_parameters(*modules):
    """Number of parameters of ``modules`` together (a parameter shared by two
    of them counts twice; works on the meta device: nothing is allocated)."""
    return sum(p.numel() for module in modules for p in module.parameters())
