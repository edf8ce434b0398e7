"""Transcribe audio files with a fine-tuned model, in batches, through SpeechBrain's ``EncoderASR``.

::

    python -m pom.transcribe --model results/finetune/pom/1000 audio.flac [more files or folders]

``--model`` is the output folder of ``recipes/LibriSpeech/finetune/train.py``.
The model is what ``python -m pom.export`` writes: the run is exported into a
temporary folder (its checkpoint files linked, not copied) and loaded with
SpeechBrain's ``EncoderASR.from_hparams``, so this tool and an exported folder
give the same results; the checkpoint is the one the run tested with
(:func:`pom.recipe.checkpoints.final_checkpoint`). SpeechBrain does the rest:
reading the audio, mixing down to mono and resampling to the model's rate
(``EncoderASR.load_audio``), features, encoder and CTC decoding
(``transcribe_batch``: greedy, or ``CTCBeamSearcher`` with ``--decoding beam``,
with a KenLM word n-gram with ``--lm``).

Files are decoded ``--batch_size`` at a time, sorted by duration (less
padding); one ``path<TAB>TRANSCRIPT`` line per file is printed in the order
given (folders are searched for .flac, .wav, .ogg and .mp3 files), with a
progress bar (tqdm, on stderr when it is a terminal) and, at the end, the
real-time factor on stderr (time spent reading and decoding the audio,
model loading excluded, over the audio's duration). Runs on CPU by default;
``--device cuda`` uses a GPU. ``--chunk_size`` (and ``--left_context_chunks``)
run the encoder chunk by chunk (streaming; see :func:`encode_chunks`).

Long recordings (:mod:`pom.longform`): a file longer than ``--long_seconds``
(default 30) is decoded alone, never padded into a batch, in bounded memory.
``--long_form auto`` (default) cuts it into windows of ``--segment_seconds``
(20) overlapping by at least ``--overlap_seconds`` (4), decoded as utterances of
their own and stitched at the middle of each overlap: a whole-file PoM averages
its state over the whole recording, and a model trained on short utterances
loses accuracy on long inputs (see :mod:`pom.longform` for the measurements);
``segments`` does so for any file longer than one window; ``whole`` decodes it
in one pass computed in bounded pieces (the plain pass's log-probabilities).
The exported model does the same (``LongFormSequential``). Not with
``--chunk_size``.

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
import tempfile
import time

import torch
from speechbrain.dataio import audio_io
from speechbrain.inference.ASR import EncoderASR
from speechbrain.utils.data_utils import batch_pad_right
from tqdm import tqdm

from pom import longform
from pom.encoder import MixerEncoder
from pom.export import ExportError, FinetunedRun, write_asr_folder

AUDIO_EXTENSIONS = (".flac", ".wav", ".ogg", ".mp3")
DEFAULT_BATCH_SIZE = 8


class ModelError(RuntimeError):
    """The model folder cannot be used."""


class AudioError(RuntimeError):
    """An audio file cannot be read."""


def encode_chunks(encoder, src, lens, chunk_size, left_context_chunks=None):
    """A :class:`pom.encoder.MixerEncoder` run chunk by chunk (``chunk_size`` encoder frames of 40 ms).

    A causal encoder (fine-tuned with ``causal: True``) really streams: chunks go
    through :meth:`pom.encoder.MixerEncoder.forward_streaming`, which carries the
    mixers' running state and the convolution caches. Any other encoder is
    evaluated with SpeechBrain's dynamic-chunk masks, which is what it would
    compute when fed chunk by chunk (frames see up to the end of their chunk and
    ``left_context_chunks`` chunks back). The CNN front end runs on the whole
    utterance (it looks a few frames ahead).

    Example
    -------
    >>> enc = MixerEncoder(20, d_model=16, num_layers=1, d_ffn=32, mixer="pom", causal=True).eval()
    >>> src = torch.randn(1, 10, 20)
    >>> torch.allclose(encode_chunks(enc, src, torch.ones(1), chunk_size=3), enc(src), atol=1e-5)
    True
    """
    if getattr(encoder.encoder.layers[0].convolution_module, "causal", False):
        context = encoder.make_streaming_context()
        return torch.cat([encoder.forward_streaming(chunk, context) for chunk in src.split(chunk_size, dim=1)], dim=1)
    from speechbrain.utils.dynamic_chunk_training import DynChunkTrainConfig

    config = DynChunkTrainConfig(chunk_size=chunk_size, left_context_size=left_context_chunks)
    return encoder(src, lens, dynchunktrain_config=config)


class ChunkedEncoderASR(EncoderASR):
    """SpeechBrain's ``EncoderASR`` whose encoder can run chunk by chunk.

    With ``chunk_size`` None (the default) it is ``EncoderASR``. Otherwise
    :meth:`encode_batch` runs the exported ``LengthsCapableSequential`` layer by
    layer, its :class:`pom.encoder.MixerEncoder` through :func:`encode_chunks`.
    """

    chunk_size = None
    left_context_chunks = None

    def encode_batch(self, wavs, wav_lens):
        """CTC log-probabilities ``[B, frames, outputs]`` of waveforms ``[B, samples]``."""
        if self.chunk_size is None:
            return super().encode_batch(wavs, wav_lens)
        model = self.mods.encoder
        x, wav_lens = wavs.float().to(self.device), wav_lens.to(self.device)
        for layer, lengths_arg in zip(model.values(), model.lengths_arg_names):
            if isinstance(layer, MixerEncoder):
                x = encode_chunks(layer, x, wav_lens, self.chunk_size, self.left_context_chunks)
            else:
                x = layer(x, **{lengths_arg: wav_lens}) if lengths_arg else layer(x)
            x = x[0] if isinstance(x, tuple) else x
        return x


class Transcriber:
    """A fine-tuning run loaded as SpeechBrain's ``EncoderASR``, ready to transcribe.

    Arguments
    ---------
    model_dir : str
        Output folder of a fine-tuning run.
    device : str
        Torch device.
    decoding : str
        ``greedy`` or ``beam`` (SpeechBrain's ``CTCBeamSearcher``).
    beam_size : int
        Beam size for ``beam``.
    chunk_size, left_context_chunks : int, optional
        Streaming mode (encoder frames per chunk, chunks of left context).
    lm_path : str, optional
        An ARPA or KenLM binary word n-gram (``python -m pom.lm``) for ``beam``.
    lm_alpha, lm_beta : float, optional
        LM weight and word bonus (default: the run's ``lm_alpha`` / ``lm_beta``).
    long_form, long_seconds, segment_seconds, overlap_seconds : optional
        Long recordings (:class:`pom.export.modules.LongFormSequential`; None: the defaults of
        :mod:`pom.longform`: auto above 30 s, 20 s windows, 4 s overlap).
    """

    def __init__(
        self,
        model_dir,
        device="cpu",
        decoding="greedy",
        beam_size=20,
        chunk_size=None,
        left_context_chunks=None,
        lm_path=None,
        lm_alpha=None,
        lm_beta=None,
        long_form=None,
        long_seconds=None,
        segment_seconds=None,
        overlap_seconds=None,
    ):
        if chunk_size is not None and chunk_size < 1:
            raise ModelError(f"--chunk_size must be a positive number of encoder frames, got {chunk_size}")
        if not os.path.isdir(model_dir):
            raise ModelError(f"model folder {model_dir} does not exist (give the output folder of a fine-tuning run)")
        try:
            run = FinetunedRun(model_dir)
            with tempfile.TemporaryDirectory() as tmp:
                folder = os.path.join(tmp, "model")
                os.makedirs(folder)
                write_asr_folder(run, folder, decoding, beam_size, lm_path, lm_alpha, lm_beta, link=True)
                self.asr = ChunkedEncoderASR.from_hparams(
                    source=folder, savedir=os.path.join(tmp, "savedir"), run_opts={"device": device}
                )
        except ExportError as err:
            raise ModelError(str(err)) from None
        self.asr.chunk_size, self.asr.left_context_chunks = chunk_size, left_context_chunks
        try:
            self.asr.mods.encoder.configure(
                long_form=long_form, long_seconds=long_seconds, segment_seconds=segment_seconds,
                overlap_seconds=overlap_seconds,
            )  # fmt: skip
        except ValueError as err:
            raise ModelError(str(err)) from None
        self.tokens = run.tokens  # the run's modules (run.hparams) are not kept: the model is self.asr
        self.checkpoint = str(run.checkpoint.path)
        self.sample_rate = int(run.config["sample_rate"])
        self.stats = {}

    def long_path(self, num_samples):
        """How an input of ``num_samples`` samples is decoded: ``"segments"``, ``"whole"``
        (:mod:`pom.longform`; the file decoded alone) or None (in batches, the plain pass)."""
        if self.asr.chunk_size is not None:
            return None
        return self.asr.mods.encoder.long_path(num_samples)

    def load_audio(self, path):
        """Mono float32 waveform ``[samples]`` at the model's sample rate (SpeechBrain's ``load_audio``)."""
        if not os.path.isfile(path):
            raise AudioError(f"{path}: no such file")
        try:
            wav = self.asr.load_audio(os.path.abspath(path))
        except Exception as err:  # noqa: BLE001 - soundfile raises several types
            reason = str(err.__cause__ or err).strip().splitlines()
            raise AudioError(f"{path}: cannot read audio ({reason[0] if reason else type(err).__name__})") from None
        if wav.numel() == 0:
            raise AudioError(f"{path}: empty audio")
        return wav

    @torch.no_grad()
    def log_probs(self, wavs, wav_lens=None):
        """CTC log-probabilities ``[B, frames, outputs]`` of waveforms ``[B, samples]`` (or one ``[samples]``)."""
        wavs = wavs.unsqueeze(0) if wavs.dim() == 1 else wavs
        wav_lens = torch.ones(wavs.shape[0]) if wav_lens is None else wav_lens
        return self.asr.encode_batch(wavs, wav_lens)

    @torch.no_grad()
    def transcribe_batch(self, wavs, wav_lens):
        """Transcripts (upper-case words, single spaces) of a padded batch ``[B, samples]``."""
        words, _ = self.asr.transcribe_batch(wavs, wav_lens)
        return [" ".join(str(text).split()) for text in words]

    def transcribe(self, wav):
        """Transcript of one waveform ``[samples]``."""
        return self.transcribe_batch(wav.unsqueeze(0), torch.ones(1))[0]

    def transcribe_files(self, paths, batch_size=DEFAULT_BATCH_SIZE, progress=None):
        """Yields ``(path, transcript, None)`` or ``(path, None, error)`` for each of ``paths``, in
        their order. Files are decoded in batches of ``batch_size``, longest first (a long file,
        :meth:`long_path`, alone), with a tqdm progress bar on stderr (``progress``: None shows it
        when stderr is a terminal); ``self.stats`` then holds the files decoded, their duration
        and the time spent (``audio_s``, ``compute_s``)."""
        if batch_size < 1:
            raise ValueError(f"--batch_size must be at least 1, got {batch_size}")
        results, durations = {}, {}
        for i, path in enumerate(paths):
            try:
                if not os.path.isfile(path):
                    raise AudioError(f"{path}: no such file")
                durations[i] = audio_io.info(path).duration
            except AudioError as err:
                results[i] = (path, None, str(err))
            except RuntimeError as err:
                reason = str(err.__cause__ or err).strip().splitlines()
                results[i] = (path, None, f"{path}: cannot read audio ({reason[0] if reason else 'unknown format'})")
        order = sorted(durations, key=lambda i: -durations[i])
        alone = [i for i in order if self.long_path(int(durations[i] * self.sample_rate)) is not None]
        rest = order[len(alone) :]  # the long files are the first ones
        batches = [[i] for i in alone] + [rest[k : k + batch_size] for k in range(0, len(rest), batch_size)]
        audio_s, compute_s, decoded, following = 0.0, 0.0, 0, 0
        disable = None if progress is None else not progress  # None: shown when stderr is a terminal
        with tqdm(total=len(paths), unit="file", file=sys.stderr, disable=disable, leave=False) as bar:
            bar.update(len(results))
            for indices in batches:
                begin = time.perf_counter()
                batch = []
                for i in indices:
                    try:
                        batch.append((i, self.load_audio(paths[i])))
                    except AudioError as err:
                        results[i] = (paths[i], None, str(err))
                if batch:
                    wavs, lens = batch_pad_right([wav for _, wav in batch])
                    for (i, wav), text in zip(batch, self.transcribe_batch(wavs, lens)):
                        results[i] = (paths[i], text, None)
                        audio_s += wav.numel() / self.sample_rate
                        decoded += 1
                compute_s += time.perf_counter() - begin
                bar.update(len(indices))
                while following in results:
                    yield results.pop(following)
                    following += 1
        while following in results:
            yield results.pop(following)
            following += 1
        self.stats = {"files": decoded, "audio_s": audio_s, "compute_s": compute_s}


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
    parser.add_argument("--model", required=True, help="output folder of recipes/LibriSpeech/finetune/train.py")
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
        "--lm", default=None, help="word n-gram LM (ARPA, e.g. from python -m pom.lm) for --decoding beam"
    )
    parser.add_argument("--lm_alpha", type=float, default=None, help="LM weight (default: the run's lm_alpha)")
    parser.add_argument("--lm_beta", type=float, default=None, help="word insertion bonus (default: the run's lm_beta)")
    parser.add_argument(
        "--long_form",
        choices=longform.LONG_FORMS,
        default=None,
        help="files longer than --long_seconds, decoded alone in bounded memory: auto (default) = segments; "
        "segments = overlapping windows stitched at the middle of the overlaps (any file longer than one window); "
        "whole = one pass over the whole file",
    )
    parser.add_argument(
        "--long_seconds", type=float, default=None, help=f"long-file threshold (default {longform.LONG_SECONDS:g} s)"
    )
    parser.add_argument(
        "--segment_seconds", type=float, default=None, help=f"window length (default {longform.SEGMENT_SECONDS:g} s)"
    )
    parser.add_argument(
        "--overlap_seconds",
        type=float,
        default=None,
        help=f"least overlap of two windows (default {longform.OVERLAP_SECONDS:g} s)",
    )
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch_size must be at least 1, got {args.batch_size}")

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
    failures = 0
    for path, text, error in transcriber.transcribe_files(expand_inputs(args.audio), args.batch_size):
        if error is not None:
            failures += 1
            print(f"Error: {error}", file=sys.stderr)
        else:
            print(f"{path}\t{text}", flush=True)
    print(rtf_line(transcriber.stats, args.batch_size, args.device), file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
