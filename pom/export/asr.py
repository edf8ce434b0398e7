"""A fine-tuning run as a SpeechBrain ``EncoderASR`` folder, checked before it is put in place.

:func:`export_finetuned` writes the folder (:func:`pom.export.asr_folder.write_asr_folder`),
adds an example audio file and a model card (:mod:`pom.export.asr_card`), checks that
it loads back (strictly) and gives the run's log-probabilities, and puts it in place
as a whole.

Example
-------
>>> export_finetuned("/nonexistent/run", "/tmp/out")
Traceback (most recent call last):
...
pom.export.hub.ExportError: run folder /nonexistent/run does not exist (give the output folder of a fine-tuning run)

Authors
 * pom-speech contributors 2025
"""

import os
import tempfile

import torch

from pom.export.asr_card import INTERFACE, model_card
from pom.export.asr_folder import write_asr_folder
from pom.export.hub import HPARAMS_FILE, ExportError, example_audio, load_strictly, staged_folder
from pom.export.run import FinetunedRun, is_finetuning_run

#: Tolerance of the check that the exported model gives the run's log-probabilities.
VERIFY_ATOL = 1e-5

__all__ = ["INTERFACE", "VERIFY_ATOL", "FinetunedRun", "export_finetuned", "is_finetuning_run", "write_asr_folder"]


def export_finetuned(
    run, out, decoding="greedy", beam_size=None, lm_path=None, lm_alpha=None, lm_beta=None, overwrite=False,
    verify=True, onnx=False,
):  # fmt: skip
    """Exports a fine-tuning run to ``out`` (SpeechBrain's hub format, for ``EncoderASR``).

    ``run`` is its output folder (or a :class:`FinetunedRun`). The folder is
    written beside ``out`` and renamed into place once complete and, with
    ``verify``, once ``EncoderASR.from_hparams`` loads it strictly and gives the
    run's log-probabilities on the example audio (atol 1e-5). An LM is copied
    into the folder; ``hyperparams.yaml`` names it by its absolute path (after
    moving or uploading the folder, load with ``overrides={"kenlm_model_path":
    "<new folder or hub repo>/<file>"}``). With ``onnx``, the ONNX models of
    :mod:`pom.export.onnx` are written (and checked) beside. Returns the absolute path of ``out``.

    Raises
    ------
    ExportError
        With a one-line message naming the file or option and what to do.
    """
    run = run if isinstance(run, FinetunedRun) else FinetunedRun(run)
    out = os.path.abspath(out)
    with staged_folder(out, overwrite) as stage:
        lm_ref = os.path.join(out, os.path.basename(lm_path)) if lm_path else None
        written = write_asr_folder(run, stage, decoding, beam_size, lm_path, lm_alpha, lm_beta, lm_ref=lm_ref)
        test_csv = run.hparams.get("test_csv") or []
        example, described, reference = example_audio(
            [run.folder],
            stage,
            int(run.config["sample_rate"]),
            data_root=run.hparams.get("data_folder"),
            csv_files=[test_csv] if isinstance(test_csv, str) else list(test_csv),
        )
        if verify:
            _verify(run, stage, example, written["lm"])
        if onnx:  # model.onnx, model.int8.onnx, tokens.txt, ... beside the hub files (pom.export.onnx)
            from pom.export.onnx import write_onnx

            written["files"] += write_onnx(run, stage, example if verify else None)
        with open(os.path.join(stage, "README.md"), "w", encoding="utf-8") as f:
            f.write(model_card(run, out, written, example, described, reference, decoding, lm_path))
    return out


def _verify(run, folder, example, lm_name):
    from speechbrain.inference.ASR import EncoderASR

    overrides = {"kenlm_model_path": os.path.join(folder, lm_name)} if lm_name else {}
    with tempfile.TemporaryDirectory() as savedir:
        asr = load_strictly(EncoderASR, folder, savedir, overrides=overrides, run_opts={"device": "cpu"})
        labels = len(asr.tokenizer) if hasattr(asr.tokenizer, "lab2ind") else asr.tokenizer.vocab_size()
        if labels != int(run.hparams["output_neurons"]):
            raise ExportError(
                f"{folder}/tokenizer.ckpt has {labels} labels, the CTC head {run.hparams['output_neurons']} outputs"
            )
        wav = asr.load_audio(os.path.join(folder, example)).unsqueeze(0)
        lens = torch.ones(1)
        with torch.no_grad():
            ours = run.log_probs(wav, lens)
            theirs = asr.encode_batch(wav, lens)
        gap = (ours - theirs).abs().max().item() if ours.shape == theirs.shape else float("inf")
        if gap > VERIFY_ATOL:
            raise ExportError(
                f"the exported model in {folder} does not give the run's log-probabilities "
                f"(max difference {gap:.3g} > {VERIFY_ATOL}): {HPARAMS_FILE} and the run's YAML differ"
            )
