"""Trained models in SpeechBrain's hub format, loadable with SpeechBrain's own interfaces.

::

    python -m pom.export RUN OUT [--decoding beam --beam_size 20 [--lm 4-gram.arpa]] [--onnx] [--all_layers]

* ``RUN`` a fine-tuning output folder -> ``OUT`` for
  ``speechbrain.inference.ASR.EncoderASR`` (``transcribe_file``,
  ``transcribe_batch``, ``encode_batch``: CTC log-probabilities); greedy
  decoding, or SpeechBrain's ``CTCBeamSearcher`` with ``--decoding beam``
  (and a KenLM n-gram with ``--lm``). See :mod:`pom.export.asr`. With ``--onnx``,
  also ``model.onnx``, ``model.int8.onnx``, ``tokens.txt`` and their settings for
  ONNX Runtime (:mod:`pom.export.onnx`; ``python -m pom.transcribe --onnx OUT``).
* ``RUN`` a pre-training output folder (or its ``pretrained/`` or a ``CKPT+*``
  folder, or a checkpoint ``python -m pom.convert`` reads) -> ``OUT`` for
  ``speechbrain.inference.encoders.WaveformEncoder`` (``encode_file``,
  ``encode_batch``; every layer's output with ``--all_layers`` or
  ``overrides={"output_all_layers": True}``). See :mod:`pom.export.encoder`.

``OUT`` holds ``hyperparams.yaml`` (with a ``pretrainer`` that loads the
folder's ``*.ckpt`` files), the weights of the checkpoint the run tested with,
the tokenizer, an example audio file and a model card ``README.md`` (front
matter for model hubs). It is written beside ``OUT`` and renamed into place
once it loads back with the SpeechBrain interface (strictly) and, for a
fine-tuned model, gives the run's log-probabilities. The command prints the
lines that load and use it.

Example
-------
>>> main(["/nonexistent/run", "/tmp/out"])
Traceback (most recent call last):
...
SystemExit: Error: /nonexistent/run does not exist (give a fine-tuning or pre-training output folder)

Authors
 * pom-speech contributors 2025
"""

import argparse
import os
import sys

from pom.export.asr import INTERFACE as ASR_INTERFACE
from pom.export.asr import export_finetuned
from pom.export.asr_folder import write_asr_folder
from pom.export.encoder import INTERFACE as ENCODER_INTERFACE
from pom.export.encoder import export_pretrained
from pom.export.hub import ExportError, usage_lines
from pom.export.run import FinetunedRun, is_finetuning_run

__all__ = [
    "ExportError",
    "FinetunedRun",
    "export_finetuned",
    "export_pretrained",
    "export_run",
    "is_finetuning_run",
    "main",
    "usage_lines",
    "write_asr_folder",
]


def export_run(run, out, decoding="greedy", beam_size=None, lm_path=None, lm_alpha=None, lm_beta=None,
               all_layers=False, overwrite=False, onnx=False):  # fmt: skip
    """Exports ``run`` to ``out``: a fine-tuning run for ``EncoderASR``, anything
    else as a pre-trained encoder for ``WaveformEncoder``. Returns
    ``(out, interface)``, the interface's dotted name."""
    run = os.path.abspath(str(run))
    if not os.path.exists(run):
        raise ExportError(f"{run} does not exist (give a fine-tuning or pre-training output folder)")
    if is_finetuning_run(run):
        if all_layers:
            raise ExportError("--all_layers is for a pre-trained encoder; a fine-tuning run exports an EncoderASR")
        out = export_finetuned(
            run, out, decoding, beam_size, lm_path, lm_alpha, lm_beta, overwrite=overwrite, onnx=onnx
        )
        return out, ASR_INTERFACE
    if onnx:
        raise ExportError(f"--onnx is for a fine-tuning run (a CTC model); {run} is not one")
    asr_options = {"--decoding beam": decoding != "greedy", "--beam_size": beam_size is not None, "--lm": lm_path}
    given = [option for option, value in asr_options.items() if value]
    if given:
        raise ExportError(f"{', '.join(given)}: decoding options are for a fine-tuning run, {run} is not one")
    return export_pretrained(run, out, all_layers=all_layers, overwrite=overwrite), ENCODER_INTERFACE


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m pom.export",
        description="Writes a fine-tuning run (EncoderASR) or a pre-trained encoder (WaveformEncoder) in "
        "SpeechBrain's hub format.",
    )
    parser.add_argument("run", help="fine-tuning or pre-training output folder (or a checkpoint folder)")
    parser.add_argument("out", help="folder to write (must not exist, unless --overwrite)")
    parser.add_argument(
        "--decoding", choices=("greedy", "beam"), default="greedy", help="CTC decoding (default greedy)"
    )
    parser.add_argument(
        "--beam_size", type=int, default=None, help="beam size with --decoding beam (default the run's)"
    )
    parser.add_argument("--lm", default=None, help="word n-gram (ARPA or KenLM binary) for --decoding beam; copied in")
    parser.add_argument("--lm_alpha", type=float, default=None, help="LM weight (default: the run's lm_alpha)")
    parser.add_argument("--lm_beta", type=float, default=None, help="word insertion bonus (default: the run's lm_beta)")
    parser.add_argument(
        "--all_layers", action="store_true", help="pre-trained encoder: encode_batch also returns every layer's output"
    )
    parser.add_argument(
        "--onnx",
        action="store_true",
        help="fine-tuning run: also model.onnx, model.int8.onnx, tokens.txt (ONNX Runtime)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    args = parser.parse_args(argv)
    try:
        out, interface = export_run(
            args.run, args.out, args.decoding, args.beam_size, args.lm, args.lm_alpha, args.lm_beta,
            all_layers=args.all_layers, overwrite=args.overwrite, onnx=args.onnx,
        )  # fmt: skip
    except ExportError as err:
        sys.exit(f"Error: {err}")
    example = next(name for name in sorted(os.listdir(out)) if name.startswith("example."))
    print(f"Exported {args.run} to {out} ({', '.join(sorted(os.listdir(out)))}). Load and use it with:\n")
    print("\n".join(usage_lines(interface, out, example)))
    if args.onnx:
        from pom.export.onnx import onnx_usage_lines

        print("\nWith ONNX Runtime (no PyTorch):\n")
        print("\n".join(onnx_usage_lines(out, example)))
    return 0
