"""Transcribe audio files with a fine-tuned model, in batches: PyTorch or ONNX Runtime.

::

    python -m pom.transcribe --model results/finetune/pom/1000 audio.flac [more files or folders]
    python -m pom.transcribe --onnx exported/onnx audio.flac [...]

``--model`` is the output folder of ``recipes/LibriSpeech/finetune/train.py``,
run with PyTorch and SpeechBrain (:class:`pom.inference.transcriber.Transcriber`:
the run as ``python -m pom.export`` writes it, loaded with ``EncoderASR``).
``--onnx`` is the ``onnx/`` folder that ``python -m pom.export RUN OUT --onnx``
writes, run with ONNX Runtime, numpy and soundfile only: torch is never imported
on that path (:class:`pom.runtime.transcriber.OnnxTranscriber`; ``--int8`` uses
``model.int8.onnx``). Both give the same greedy transcripts.

Files are decoded ``--batch_size`` at a time, sorted by duration (less
padding); one ``path<TAB>TRANSCRIPT`` line per file is printed in the order
given (folders are searched for .flac, .wav, .ogg and .mp3 files), with a
progress bar (tqdm, on stderr when it is a terminal; PyTorch path) and, at the
end, the real-time factor on stderr (time spent reading and decoding the
audio, model loading excluded, over the audio's duration). ``--decoding beam``
runs a CTC beam search (SpeechBrain's ``CTCBeamSearcher``, or the numpy prefix
beam search of :mod:`pom.runtime.ctc`), with a KenLM word n-gram with ``--lm``.
PyTorch only: ``--device cuda``; ``--chunk_size`` (and ``--left_context_chunks``)
run the encoder chunk by chunk (streaming, :meth:`pom.encoder.MixerEncoder.forward_chunks`).

Long recordings: a file longer than ``--long_seconds`` (default 30) is decoded
alone, never padded into a batch, in bounded memory. ``--long_form auto``
(default) cuts it into windows of ``--segment_seconds`` (20) overlapping by at
least ``--overlap_seconds`` (4), decoded as utterances of their own and
stitched at the middle of each overlap (:mod:`pom.runtime.segments`): a
whole-file PoM averages its state over the whole recording, and a model
trained on short utterances loses accuracy on long inputs; ``segments`` does
so for any file longer than one window; ``whole`` (PyTorch only) decodes it in
one pass computed in bounded pieces (the plain pass's log-probabilities, see
:class:`pom.inference.CTCModel`).

A file that cannot be read is reported on stderr and skipped (exit status
1); a missing or unfinished model folder stops with a one-line error.

Example
-------
>>> main(["--model", "/nonexistent/run", "a.flac"])
Traceback (most recent call last):
...
SystemExit: Error: model folder /nonexistent/run does not exist (give the output folder of a fine-tuning run)

Authors
 * pom-speech contributors 2025
"""

import argparse
import os
import sys

from pom.runtime import segments
from pom.runtime.transcriber import DEFAULT_BATCH_SIZE

AUDIO_EXTENSIONS = (".flac", ".wav", ".ogg", ".mp3")
#: Names this module gives from :mod:`pom.inference.transcriber` (imported on first use: torch).
_TORCH_NAMES = ("Transcriber", "ModelError", "AudioError")


def __getattr__(name):
    if name in _TORCH_NAMES:
        from pom.inference import transcriber

        return getattr(transcriber, name)
    raise AttributeError(f"module 'pom.transcribe' has no attribute {name!r}")


def expand_inputs(inputs):
    """Files as given; folders replaced by their audio files (sorted)."""
    paths = []
    for item in inputs:
        if os.path.isdir(item):
            found = sorted(
                os.path.join(root, name)
                for root, _, names in os.walk(item)
                for name in names
                if name.lower().endswith(AUDIO_EXTENSIONS)
            )
            if not found:
                print(f"Warning: no audio file ({', '.join(AUDIO_EXTENSIONS)}) in {item}", file=sys.stderr)
            paths.extend(found)
        else:
            paths.append(item)
    return paths


def rtf_line(stats, batch_size, device):
    """The real-time factor line printed at the end.

    Example
    -------
    >>> rtf_line({"files": 3, "audio_s": 20.0, "compute_s": 1.0}, 8, "cpu")
    'Real-time factor: 0.050 (20.0 s of audio in 1.00 s; 3 files, batch size 8, cpu)'
    """
    audio_s, compute_s = stats.get("audio_s", 0.0), stats.get("compute_s", 0.0)
    rtf = compute_s / audio_s if audio_s else float("nan")
    return (
        f"Real-time factor: {rtf:.3f} ({audio_s:.1f} s of audio in {compute_s:.2f} s; "
        f"{stats.get('files', 0)} files, batch size {batch_size}, {device})"
    )


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m pom.transcribe",
        description="Prints 'path<TAB>TRANSCRIPT' for each audio file, with a fine-tuned CTC model.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="output folder of recipes/LibriSpeech/finetune/train.py (PyTorch)")
    source.add_argument(
        "--onnx",
        metavar="MODEL_DIR",
        help="onnx/ folder of python -m pom.export RUN OUT --onnx (ONNX Runtime, no torch)",
    )
    parser.add_argument("--int8", action="store_true", help="with --onnx: the int8 model (model.int8.onnx)")
    parser.add_argument("audio", nargs="+", help="audio files or folders (.flac, .wav, .ogg, .mp3)")
    parser.add_argument(
        "--batch_size", type=int, default=DEFAULT_BATCH_SIZE, help=f"files per batch (default {DEFAULT_BATCH_SIZE})"
    )
    parser.add_argument(
        "--decoding", choices=("greedy", "beam"), default="greedy", help="CTC decoding (default greedy)"
    )
    parser.add_argument("--beam_size", type=int, default=20, help="beam size with --decoding beam")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument(
        "--chunk_size",
        type=int,
        default=None,
        help="streaming mode: encoder frames (40 ms) per chunk; best with a model fine-tuned with "
        "--streaming=True (dynamic chunks) or --causal=True (true streaming)",
    )
    parser.add_argument(
        "--left_context_chunks", type=int, default=None, help="streaming mode: chunks of left context (default all)"
    )
    parser.add_argument(
        "--lm",
        default=None,
        help="word n-gram LM (ARPA or KenLM binary, python -m pom.lm) for --decoding beam",
    )
    parser.add_argument("--lm_alpha", type=float, default=None, help="LM weight (default: the run's lm_alpha)")
    parser.add_argument("--lm_beta", type=float, default=None, help="word insertion bonus (default: the run's lm_beta)")
    parser.add_argument(
        "--long_form",
        choices=segments.LONG_FORMS,
        default=None,
        help="files longer than --long_seconds, decoded alone in bounded memory: auto (default) = segments; "
        "segments = overlapping windows stitched at the middle of the overlaps (any file longer than one window); "
        "whole = one pass over the whole file",
    )
    parser.add_argument(
        "--long_seconds", type=float, default=None, help=f"long-file threshold (default {segments.LONG_SECONDS:g} s)"
    )
    parser.add_argument(
        "--segment_seconds", type=float, default=None, help=f"window length (default {segments.SEGMENT_SECONDS:g} s)"
    )
    parser.add_argument(
        "--overlap_seconds",
        type=float,
        default=None,
        help=f"least overlap of two windows (default {segments.OVERLAP_SECONDS:g} s)",
    )
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch_size must be at least 1, got {args.batch_size}")

    if args.onnx is not None:
        return _main_onnx(args, parser)
    from pom.inference.transcriber import ModelError, Transcriber

    try:
        transcriber = Transcriber(
            args.model,
            device=args.device,
            decoding=args.decoding,
            beam_size=args.beam_size,
            chunk_size=args.chunk_size,
            left_context_chunks=args.left_context_chunks,
            lm_path=args.lm,
            lm_alpha=args.lm_alpha,
            lm_beta=args.lm_beta,
            long_form=args.long_form,
            long_seconds=args.long_seconds,
            segment_seconds=args.segment_seconds,
            overlap_seconds=args.overlap_seconds,
        )
    except ModelError as err:
        sys.exit(f"Error: {err}")
    return _print_transcripts(transcriber, args.audio, args.batch_size, args.device)


def _main_onnx(args, parser):
    """``--onnx``: :class:`pom.runtime.transcriber.OnnxTranscriber` (no torch)."""
    from pom.runtime.transcriber import ModelError, OnnxTranscriber

    torch_only = {"--chunk_size": args.chunk_size is not None, "--device": args.device != "cpu",
                  "--long_form whole": args.long_form == "whole"}  # fmt: skip
    given = [option for option, value in torch_only.items() if value]
    if given:
        parser.error(f"{', '.join(given)}: PyTorch only (give --model RUN instead of --onnx)")
    try:
        transcriber = OnnxTranscriber(
            args.onnx, int8=args.int8, decoding=args.decoding, beam_size=args.beam_size, lm_path=args.lm,
            lm_alpha=args.lm_alpha, lm_beta=args.lm_beta, long_form=args.long_form, long_seconds=args.long_seconds,
            segment_seconds=args.segment_seconds, overlap_seconds=args.overlap_seconds,
        )  # fmt: skip
    except ModelError as err:
        sys.exit(f"Error: {err}")
    return _print_transcripts(transcriber, args.audio, args.batch_size, "onnxruntime" + (" int8" if args.int8 else ""))


def _print_transcripts(transcriber, inputs, batch_size, device):
    failures = 0
    for path, text, error in transcriber.transcribe_files(expand_inputs(inputs), batch_size):
        if error is not None:
            failures += 1
            print(f"Error: {error}", file=sys.stderr)
        else:
            print(f"{path}\t{text}", flush=True)
    print(rtf_line(transcriber.stats, batch_size, device), file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
