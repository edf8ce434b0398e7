"""A finished fine-tuning run: its hyperparameters, checkpoint, tokens and model.

:class:`FinetunedRun` reads a finished run of
``recipes/LibriSpeech/finetune/train.py``: its hyperparameters
(:func:`pom.recipe.hparams.load_run_hparams`), the checkpoint it tested with
(:func:`pom.recipe.checkpoints.final_checkpoint`), its tokens
(:meth:`pom.recipe.tokens.CTCTokens.load`) and its modules as a
:class:`pom.inference.CTCModel` (:meth:`FinetunedRun.model`), what every export
is checked against.

Example
-------
>>> FinetunedRun("/nonexistent/run")
Traceback (most recent call last):
...
pom.export.hub.ExportError: run folder /nonexistent/run does not exist (give the output folder of a fine-tuning run)

Authors
 * pom-speech contributors 2025
"""

import json
import math
import os

import torch

from pom.export.hub import ExportError


def is_finetuning_run(folder):
    """Whether ``folder`` is the output folder of a fine-tuning run (it holds the tokens the run built)."""
    save = os.path.join(folder, "save")
    return os.path.isfile(os.path.join(save, "label_encoder.txt")) or os.path.isdir(os.path.join(save, "tokenizer"))


class FinetunedRun:
    """A fine-tuning run, ready to be exported or compared with.

    Arguments
    ---------
    folder : str
        Output folder of ``recipes/LibriSpeech/finetune/train.py``.

    Raises
    ------
    ExportError
        The folder is missing, is not a fine-tuning run, or has no checkpoint yet.
    """

    def __init__(self, folder):
        from pom.recipe.checkpoints import final_checkpoint
        from pom.recipe.hparams import load_run_hparams
        from pom.recipe.tokens import CTCTokens

        self.folder = folder = os.path.abspath(folder)
        if not os.path.isdir(folder):
            raise ExportError(f"run folder {folder} does not exist (give the output folder of a fine-tuning run)")
        self.save_folder = os.path.join(folder, "save")
        if not is_finetuning_run(folder):
            raise ExportError(
                f"{folder} is not a fine-tuning output folder (no save/label_encoder.txt or save/tokenizer/)"
            )
        try:  # its paths follow the folder, wherever the run was made; nothing is trained or prepared
            self.hparams = load_run_hparams(folder)
        except Exception as err:  # noqa: BLE001 - any YAML/instantiation problem
            raise ExportError(f"cannot load the hyperparameters of {folder}: {err}") from None
        for key in ("pt_model", "model", "normalize", "compute_features", "token_type", "encoder_config"):
            if key not in self.hparams:
                raise ExportError(f"the hyperparameters of {folder} are not a fine-tuning configuration (no {key!r})")
        self.best_metric = self.hparams.get("best_metric", "WER")
        self.checkpoint = final_checkpoint(self.save_folder, self.best_metric)
        if self.checkpoint is None:
            raise ExportError(f"{self.save_folder} holds no checkpoint: the run has not finished an epoch yet")
        for name in ("pt_model", "model", "normalize"):
            if not os.path.isfile(self.paramfile(name)):
                raise ExportError(f"{self.paramfile(name)} is missing: checkpoint {self.checkpoint.path} is incomplete")
        try:
            self.tokens = CTCTokens.load(self.save_folder, self.hparams["token_type"], self.hparams["bpe_vocab_size"])
        except (FileNotFoundError, ValueError) as err:
            raise ExportError(str(err)) from None
        self._model = None

    def paramfile(self, name):
        """The file of recoverable ``name`` in the checkpoint the run tested with."""
        paramfiles = getattr(self.checkpoint, "paramfiles", None) or {}
        return str(paramfiles.get(name) or os.path.join(str(self.checkpoint.path), f"{name}.ckpt"))

    @property
    def config(self):
        """The encoder configuration (``encoder_config.json``'s keys)."""
        return dict(self.hparams["encoder_config"].config)

    def results(self, lm=False):
        """The run's ``results.json`` (``results_lm.json`` with ``lm``) as a dict, or None."""
        path = os.path.join(self.folder, "results_lm.json" if lm else "results.json")
        try:
            with open(path, encoding="utf-8") as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def model(self):
        """The recipe's own modules (its checkpoint loaded, eval mode) as a
        :class:`pom.inference.CTCModel`, the plain pass for every length."""
        if self._model is None:
            from speechbrain.utils.checkpoints import Checkpointer

            from pom.inference import CTCModel

            recoverables = {k: self.hparams[k] for k in ("model", "pt_model", "normalize")}
            Checkpointer(self.save_folder, recoverables=recoverables).load_checkpoint(self.checkpoint)
            h = self.hparams
            self._model = CTCModel(
                compute_features=h["compute_features"], normalize=h["normalize"], CNN=h["CNN"], enc=h["encoder"],
                back_end_ffn=h["back_end_ffn"], ctc_lin=h["ctc_lin"], log_softmax=h["log_softmax"],
                long_seconds=math.inf,
            ).eval()  # fmt: skip
        return self._model

    @torch.no_grad()
    def log_probs(self, wavs, wav_lens=None):
        """The recipe's CTC log-probabilities ``[B, frames, outputs]`` (its modules and
        checkpoint, full context), computed as its ``compute_forward`` does at test time."""
        return self.model()(wavs.float(), wav_lens)
