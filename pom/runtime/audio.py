"""Audio files as mono float32 waveforms at the model's rate (soundfile and numpy).

Channels are averaged (as SpeechBrain's ``EncoderASR.load_audio`` does) and other
sample rates are converted with band-limited (windowed-sinc) interpolation: the
Hann-windowed sinc kernel of ``torchaudio.functional.resample`` (6 zero crossings,
roll-off 0.99), so a file at 8 or 44.1 kHz gives about the waveform the PyTorch
path gets.

Example
-------
>>> import numpy as np
>>> t = np.arange(8000) / 8000
>>> up = resample(np.sin(2 * np.pi * 440 * t).astype(np.float32), 8000, 16000)
>>> len(up), bool(np.abs(up[200:-200] - np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)[200:-200]).max() < 1e-2)
(16000, True)
"""

import math

import numpy as np


class AudioError(RuntimeError):
    """An audio file cannot be read (one line naming the file)."""


def resample(wav, orig, new, lowpass_filter_width=6, rolloff=0.99):
    """``wav`` ``[samples]`` from ``orig`` Hz to ``new`` Hz (``ceil(samples * new / orig)`` samples)."""
    if orig == new:
        return np.asarray(wav, dtype=np.float32)
    gcd = math.gcd(int(orig), int(new))
    orig, new = int(orig) // gcd, int(new) // gcd
    base = min(orig, new) * rolloff
    width = math.ceil(lowpass_filter_width * orig / base)
    idx = np.arange(-width, width + orig, dtype=np.float64)[None, :] / orig
    t = (np.arange(0, -new, -1, dtype=np.float64)[:, None] / new + idx) * base
    t = np.clip(t, -lowpass_filter_width, lowpass_filter_width)
    window = np.cos(t * math.pi / lowpass_filter_width / 2) ** 2
    t = t * math.pi
    kernels = np.where(t == 0, 1.0, np.sin(t) / np.where(t == 0, 1.0, t)) * window * (base / orig)  # [new, taps]
    wav = np.asarray(wav, dtype=np.float64)
    padded = np.concatenate([np.zeros(width), wav, np.zeros(width + orig)])
    windows = np.lib.stride_tricks.sliding_window_view(padded, kernels.shape[1])[::orig]
    out = (windows @ kernels.T).reshape(-1)
    return out[: math.ceil(new * len(wav) / orig)].astype(np.float32)


def _first_line(err):
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def audio_info(path):
    """``(seconds, sample_rate)`` of an audio file, or an :class:`AudioError`."""
    import soundfile as sf

    try:
        info = sf.info(path)
    except Exception as err:  # noqa: BLE001 - soundfile raises several types
        raise AudioError(f"{path}: cannot read audio ({_first_line(err)})") from None
    return info.frames / info.samplerate, info.samplerate


def read_audio(path, sample_rate):
    """Mono float32 waveform ``[samples]`` of ``path`` at ``sample_rate`` Hz."""
    import os

    import soundfile as sf

    if not os.path.isfile(path):
        raise AudioError(f"{path}: no such file")
    try:
        wav, rate = sf.read(path, dtype="float32", always_2d=True)
    except Exception as err:  # noqa: BLE001 - soundfile raises several types
        raise AudioError(f"{path}: cannot read audio ({_first_line(err)})") from None
    if wav.size == 0:
        raise AudioError(f"{path}: empty audio")
    return resample(wav.mean(axis=1), rate, sample_rate)
