"""Transcribe audio files with a fine-tuned model.

::

    python -m pom.transcribe --model results/finetune/pom/1000 audio.flac [more files or folders]

``--model`` is the output folder of ``recipes/LibriSpeech/finetune/train.py``
(it holds ``hparams_base.yaml`` and ``hparams_overrides.yaml``, ``save/CKPT+*`` and the label encoder or
SentencePiece model). The checkpoint the recipe tested (best validation WER by default) is loaded.
Prints one ``path<TAB>TRANSCRIPT`` line per file (folders are searched for
.flac, .wav, .ogg and .mp3 files), in the order given. Audio is mixed down to
mono and resampled to the model's rate (16 kHz) when needed. Runs on CPU by
default; ``--device cuda`` uses a GPU.

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

import numpy as np
import soundfile as sf
import torch
import torchaudio

from pom.recipe.checks import check_lm_decoding
from pom.recipe.hparams import RECORD_OVERRIDES, load_hparams_record
from pom.recipe.tokens import CTCTokens

AUDIO_EXTENSIONS = (".flac", ".wav", ".ogg", ".mp3")


class ModelError(RuntimeError):
    """The model folder cannot be used."""


class AudioError(RuntimeError):
    """An audio file cannot be read."""


class Transcriber:
    """A fine-tuned CTC model ready to transcribe waveforms.

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
    ):
        from speechbrain.utils.checkpoints import Checkpointer

        lm_problem = check_lm_decoding(lm_path, decoding, options=("--lm", "--decoding beam"))
        if lm_problem:
            raise ModelError(lm_problem)

        if chunk_size is not None and chunk_size < 1:
            raise ModelError(f"--chunk_size must be a positive number of encoder frames, got {chunk_size}")
        self.chunk_size, self.left_context_chunks = chunk_size, left_context_chunks

        model_dir = os.path.abspath(model_dir)
        if not os.path.isdir(model_dir):
            raise ModelError(f"model folder {model_dir} does not exist (give the output folder of a fine-tuning run)")
        hparams_file = os.path.join(model_dir, RECORD_OVERRIDES)
        save_folder = os.path.join(model_dir, "save")
        if not os.path.isfile(hparams_file):
            raise ModelError(f"{model_dir} is not a fine-tuning output folder (no {RECORD_OVERRIDES})")
        # Paths inside the folder, wherever the run was made from; nothing is trained or prepared.
        overrides = {
            "output_folder": model_dir,
            "save_folder": save_folder,
            "train_log": os.path.join(model_dir, "train_log.txt"),
            "results_file": os.path.join(model_dir, "results.json"),
            "pretrained_path": None,
            "kenlm_model_path": None,
        }
        try:
            hparams = load_hparams_record(model_dir, overrides)
        except Exception as err:  # noqa: BLE001 - any YAML/instantiation problem
            raise ModelError(f"cannot load {hparams_file}: {err}") from None
        for key in ("pt_model", "model", "normalize", "compute_features", "token_type"):
            if key not in hparams:
                raise ModelError(f"{hparams_file} is not a fine-tuning configuration (no {key!r})")
        if not os.path.isdir(save_folder):
            raise ModelError(f"{model_dir} has no save/ folder: the run has not saved a checkpoint yet")
        checkpointer = Checkpointer(
            save_folder,
            recoverables={
                "model": hparams["model"],
                "pt_model": hparams["pt_model"],
                "normalize": hparams["normalize"],
            },
        )
        best = hparams.get("best_metric", "WER")
        ckpt = checkpointer.find_checkpoint(min_key=best) or checkpointer.find_checkpoint()
        if ckpt is None:
            raise ModelError(f"{save_folder} holds no checkpoint: the run has not finished an epoch yet")
        checkpointer.load_checkpoint(ckpt)
        try:
            self.tokens = CTCTokens.load(save_folder, hparams["token_type"], hparams["bpe_vocab_size"])
        except (FileNotFoundError, ValueError) as err:
            raise ModelError(str(err)) from None
        self.checkpoint = str(ckpt.path)
        self.hparams = hparams
        self.sample_rate = int(hparams["sample_rate"])
        self.device = torch.device(device)
        self.modules = (
            torch.nn.ModuleDict(
                {
                    "normalize": hparams["normalize"],
                    "CNN": hparams["CNN"],
                    "encoder": hparams["encoder"],
                    "back_end_ffn": hparams["back_end_ffn"],
                    "ctc_lin": hparams["ctc_lin"],
                }
            )
            .to(self.device)
            .eval()
        )
        self.searcher = None
        if decoding == "beam":
            from speechbrain.decoders.ctc import CTCBeamSearcher

            options = dict(hparams["test_beam_search"], beam_size=beam_size, kenlm_model_path=lm_path)
            if lm_alpha is not None:
                options["alpha"] = lm_alpha
            if lm_beta is not None:
                options["beta"] = lm_beta
            self.searcher = CTCBeamSearcher(**options, vocab_list=self.tokens.vocab_list())
        elif decoding != "greedy":
            raise ValueError(f"decoding must be 'greedy' or 'beam', got {decoding!r}")

    def load_audio(self, path):
        """Mono float32 waveform at the model's sample rate."""
        if not os.path.isfile(path):
            raise AudioError(f"{path}: no such file")
        try:
            data, rate = sf.read(path, dtype="float32", always_2d=True)
        except Exception as err:  # noqa: BLE001 - soundfile raises several types
            raise AudioError(f"{path}: cannot read audio ({err})") from None
        if data.shape[0] == 0:
            raise AudioError(f"{path}: empty audio")
        wav = torch.from_numpy(np.ascontiguousarray(data.mean(axis=1)))
        if rate != self.sample_rate:
            wav = torchaudio.functional.resample(wav, orig_freq=rate, new_freq=self.sample_rate)
        return wav

    @torch.no_grad()
    def log_probs(self, wav):
        """CTC log-probabilities ``[1, frames, outputs]`` of one waveform ``[samples]``."""
        wavs = wav.unsqueeze(0).to(self.device)
        lens = torch.ones(1, device=self.device)
        feats = self.hparams["compute_features"](wavs)
        feats = self.modules["normalize"](feats, lens)
        encoded = self.encode(self.modules["CNN"](feats), lens)
        logits = self.modules["ctc_lin"](self.modules["back_end_ffn"](encoded))
        return torch.log_softmax(logits.float(), dim=-1)

    def encode(self, src, lens):
        """The encoder, whole-utterance or chunk by chunk (``chunk_size`` encoder frames of 40 ms).

        A causal encoder (fine-tuned with ``causal: True``) really streams: chunks go through
        :meth:`pom.encoder.MixerEncoder.forward_streaming`, which carries the mixers' running
        state and the convolution caches. Any other encoder is evaluated with SpeechBrain's
        dynamic-chunk masks, which is what it would compute when fed chunk by chunk (frames see up
        to the end of their chunk and ``left_context_chunks`` chunks back). The CNN front end runs
        on the whole utterance (it looks a few frames ahead)."""
        encoder = self.modules["encoder"]
        if self.chunk_size is None:
            return encoder(src, lens)
        if getattr(encoder.encoder.layers[0].convolution_module, "causal", False):
            context = encoder.make_streaming_context()
            chunks = src.split(self.chunk_size, dim=1)
            return torch.cat([encoder.forward_streaming(chunk, context) for chunk in chunks], dim=1)
        from speechbrain.utils.dynamic_chunk_training import DynChunkTrainConfig

        config = DynChunkTrainConfig(chunk_size=self.chunk_size, left_context_size=self.left_context_chunks)
        return encoder(src, lens, dynchunktrain_config=config)

    def transcribe(self, wav):
        """Transcript (upper-case words) of one waveform ``[samples]``."""
        log_probs = self.log_probs(wav)
        lens = torch.ones(1, device=log_probs.device)
        if self.searcher is not None:
            return " ".join(self.searcher(log_probs, lens)[0][0].text.split())
        from speechbrain.decoders import ctc_greedy_decode

        ids = ctc_greedy_decode(log_probs, lens, blank_id=self.hparams["blank_index"])[0]
        return " ".join(self.tokens.decode(ids).split())


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


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m pom.transcribe",
        description="Prints 'path<TAB>TRANSCRIPT' for each audio file, with a fine-tuned CTC model.",
    )
    parser.add_argument("--model", required=True, help="output folder of recipes/LibriSpeech/finetune/train.py")
    parser.add_argument("audio", nargs="+", help="audio files or folders (.flac, .wav, .ogg, .mp3)")
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
    args = parser.parse_args(argv)

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
        )
    except ModelError as err:
        sys.exit(f"Error: {err}")
    failures = 0
    for path in expand_inputs(args.audio):
        try:
            text = transcriber.transcribe(transcriber.load_audio(path))
        except AudioError as err:
            failures += 1
            print(f"Error: {err}", file=sys.stderr)
            continue
        print(f"{path}\t{text}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
