"""Audio files -> transcripts with a fine-tuning run, through SpeechBrain's ``EncoderASR``.

The model is what ``python -m pom.export`` writes: the run is exported into a
temporary folder (its checkpoint files linked, not copied) and loaded with
SpeechBrain's ``EncoderASR.from_hparams``, so this and an exported folder give
the same results; the checkpoint is the one the run tested with
(:func:`pom.recipe.checkpoints.final_checkpoint`). The folder's ``encoder``
module is a :class:`pom.inference.CTCModel`, whose options set the long form and
streaming. SpeechBrain does the rest: reading the audio, mixing down to mono and
resampling (``EncoderASR.load_audio``), CTC decoding (``transcribe_batch``:
greedy, or ``CTCBeamSearcher``, with a KenLM word n-gram with ``lm_path``).

Example
-------
>>> Transcriber("/nonexistent/run")
Traceback (most recent call last):
...
pom.inference.transcriber.ModelError: model folder /nonexistent/run does not exist (give the output folder ...

Authors
 * pom-speech contributors 2025
"""

import os
import sys
import tempfile

import torch
from speechbrain.dataio import audio_io
from speechbrain.inference.ASR import EncoderASR
from speechbrain.utils.data_utils import batch_pad_right
from tqdm import tqdm

from pom.export import ExportError, FinetunedRun, write_asr_folder
from pom.runtime.audio import AudioError
from pom.runtime.transcriber import DEFAULT_BATCH_SIZE, transcribe_in_batches


class ModelError(RuntimeError):
    """The model folder cannot be used."""


def audio_duration(path):
    """Seconds of an audio file (SpeechBrain's ``audio_io.info``), or an :class:`AudioError`."""
    try:
        return audio_io.info(path).duration
    except RuntimeError as err:
        reason = str(err.__cause__ or err).strip().splitlines()
        raise AudioError(f"{path}: cannot read audio ({reason[0] if reason else 'unknown format'})") from None


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
        Long recordings (:class:`pom.inference.CTCModel`; None: the defaults of
        :mod:`pom.runtime.segments`: auto above 30 s, 20 s windows, 4 s overlap).
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
        if long_form == "whole" and chunk_size is not None:
            raise ModelError("--long_form whole and --chunk_size are exclusive")
        if not os.path.isdir(model_dir):
            raise ModelError(f"model folder {model_dir} does not exist (give the output folder of a fine-tuning run)")
        try:
            run = FinetunedRun(model_dir)
            with tempfile.TemporaryDirectory() as tmp:
                folder = os.path.join(tmp, "model")
                os.makedirs(folder)
                write_asr_folder(run, folder, decoding, beam_size, lm_path, lm_alpha, lm_beta, link=True)
                self.asr = EncoderASR.from_hparams(
                    source=folder, savedir=os.path.join(tmp, "savedir"), run_opts={"device": device}
                )
        except ExportError as err:
            raise ModelError(str(err)) from None
        try:  # the model is a pom.inference.CTCModel: long form and streaming are its options
            self.asr.mods.encoder.configure(
                long_form=long_form, long_seconds=long_seconds, segment_seconds=segment_seconds,
                overlap_seconds=overlap_seconds, chunk_size=chunk_size, left_context_chunks=left_context_chunks,
            )  # fmt: skip
        except ValueError as err:
            raise ModelError(str(err)) from None
        self.tokens = run.tokens  # the run's modules (run.hparams) are not kept: the model is self.asr
        self.checkpoint = str(run.checkpoint.path)
        self.sample_rate = int(run.config["sample_rate"])
        self.stats = {}

    def long_path(self, num_samples):
        """How an input of ``num_samples`` samples is decoded: ``"segments"``, ``"whole"``
        (the file decoded alone) or None (in batches: the plain pass, or streaming)."""
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
        self.stats = {}
        disable = None if progress is None else not progress  # None: shown when stderr is a terminal
        with tqdm(total=len(paths), unit="file", file=sys.stderr, disable=disable, leave=False) as bar:
            yield from transcribe_in_batches(
                paths,
                duration=audio_duration,
                load=self.load_audio,
                decode=lambda wavs: self.transcribe_batch(*batch_pad_right(wavs)),
                is_long=lambda seconds: self.long_path(int(seconds * self.sample_rate)) is not None,
                sample_rate=self.sample_rate,
                batch_size=batch_size,
                stats=self.stats,
                advance=bar.update,
            )
