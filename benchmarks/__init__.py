"""Efficiency benchmarks of the pre-training encoders (scripts; see RESULTS.md).

``efficiency.py`` times the encoders against input length, ``check.py``
compares the chunked and fused PoM with the plain one, ``floor.py`` sets one PoM
layer against its matmul / bandwidth floor and ``flops.py`` counts each mixer's
FLOPs; ``common.py`` holds what they share. Run from the repository root, as
``python benchmarks/<script>.py`` or ``python -m benchmarks.<script>``.
"""
