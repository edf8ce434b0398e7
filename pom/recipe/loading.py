"""The recipes' DataLoader options, from the YAML to SpeechBrain's ``make_dataloader``.

The base YAML files size the loaders for a GPU (``num_workers``,
``pin_memory``, ``persistent_workers``, ``prefetch_factor``; each overridable on
the command line, e.g. ``--num_workers=16 --pin_memory=False``). What does not
apply where the run is is dropped here, so the same values are safe anywhere:

* ``pin_memory`` only when the run's device is CUDA (page-locked batches let
  the copy to the GPU run asynchronously; on a CPU they only cost);
* ``persistent_workers`` and ``prefetch_factor`` only with ``num_workers > 0``
  (PyTorch refuses them without worker processes).

Example
-------
>>> opts = {"batch_size": 8, "num_workers": 0, "pin_memory": True, "persistent_workers": True, "prefetch_factor": 2}
>>> loader_options(opts, "cpu")
{'batch_size': 8, 'num_workers': 0}
>>> loader_options(dict(opts, num_workers=4), "cuda:0")
{'batch_size': 8, 'num_workers': 4, 'pin_memory': True, 'persistent_workers': True, 'prefetch_factor': 2}
"""

from speechbrain.utils.distributed import infer_device

#: Options that apply only with worker processes.
WORKER_OPTIONS = ("persistent_workers", "prefetch_factor")


def run_device(hparams, run_opts):
    """The device SpeechBrain's Brain will use: ``--device``, else the YAML's
    ``device``, else ``infer_device()`` (this process's GPU when there is one)."""
    return str(run_opts.get("device") or hparams.get("device") or infer_device())


def loader_options(options, device):
    """``options`` (a recipe's ``*_dataloader_opts``) without what cannot apply on
    ``device`` (a string such as ``"cuda:0"`` or ``"cpu"``): see the module docstring."""
    options = dict(options)
    if not str(device).startswith("cuda"):
        options.pop("pin_memory", None)
    if not options.get("num_workers"):
        for key in WORKER_OPTIONS:
            options.pop(key, None)
    return options
