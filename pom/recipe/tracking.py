"""Experiment tracking beside the recipes' text logs: SpeechBrain's
``TensorboardLogger`` and ``WandBLogger``, switched on by ``use_tensorboard``
and ``use_wandb``.

Both recipes declare the two loggers in their YAML with ``!name:`` (so that
loading a run's ``hyperparams.yaml`` never opens a writer or a W&B run) and
build them through :meth:`Trackers.from_hparams`. :class:`Trackers` passes
every statistic that is a number on to each of them (strings and the like stay
in the text logs). Neither package is needed unless its switch is on:
:func:`missing_packages` says, in one line, what to install.

Example
-------
>>> class Printer:
...     def log_stats(self, stats_meta, train_stats=None, valid_stats=None, test_stats=None):
...         print(stats_meta, train_stats)
>>> Trackers([Printer()]).log_stats({"epoch": 1, "split": "dev", "lr": torch.tensor(0.5)}, {"loss": 2})
{'epoch': 1, 'lr': 0.5} {'loss': 2}
>>> missing_packages({"use_tensorboard": False, "use_wandb": False})
[]

Authors
 * pom-speech contributors 2025
"""

import importlib
import numbers

import torch
from speechbrain.utils.train_logger import TrainLogger

#: switch -> (module to import, how to install it)
PACKAGES = {
    "use_tensorboard": ("tensorboard", "pip install tensorboard"),
    "use_wandb": ("wandb", "pip install wandb, then wandb login"),
}


def missing_packages(hparams):
    """One line per switched-on tracker whose package cannot be imported."""
    problems = []
    for switch, (module, install) in PACKAGES.items():
        if hparams.get(switch) is True and not _importable(module):
            problems.append(
                f"{switch}: True needs the {module} package, not installed here ({install}; or --{switch}=False)"
            )
    return problems


def _importable(module):
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def numeric(stats):
    """The entries of ``stats`` that are numbers (0-d tensors as Python numbers); None stays None."""
    if stats is None:
        return None
    kept = {}
    for key, value in stats.items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        if isinstance(value, numbers.Number) and not isinstance(value, bool):
            kept[key] = value
    return kept


class Trackers(TrainLogger):
    """SpeechBrain train loggers (TensorBoard, W&B) fed with numbers only.

    Call :meth:`log_stats` on every process, as SpeechBrain's loggers expect
    (they write on the main process). With no logger it does nothing.

    Arguments
    ---------
    loggers : list
        SpeechBrain ``TrainLogger`` objects.
    """

    def __init__(self, loggers=()):
        self.loggers = list(loggers)

    @classmethod
    def from_hparams(cls, hparams):
        """The trackers switched on in ``hparams``: ``tensorboard_logger()``
        when ``use_tensorboard``, ``wandb_logger(initializer=wandb.init)`` when
        ``use_wandb`` (check :func:`missing_packages` first)."""
        loggers = []
        if hparams.get("use_tensorboard"):
            loggers.append(hparams["tensorboard_logger"]())
        if hparams.get("use_wandb"):
            import wandb

            loggers.append(hparams["wandb_logger"](initializer=wandb.init))
        return cls(loggers)

    def log_stats(self, stats_meta, train_stats=None, valid_stats=None, test_stats=None, verbose=False):
        """Passes the numeric statistics on to every logger."""
        if not self.loggers:
            return
        stats = {
            "stats_meta": numeric(stats_meta) or {},
            "train_stats": numeric(train_stats),
            "valid_stats": numeric(valid_stats),
            "test_stats": numeric(test_stats),
        }
        for logger in self.loggers:
            logger.log_stats(**stats)

    def close(self):
        """Writes out and closes the TensorBoard files and the W&B run (main process)."""
        for logger in self.loggers:
            writer = getattr(logger, "writer", None)
            if writer is not None:
                writer.close()
            run = getattr(logger, "run", None)
            if run is not None:
                run.finish()
