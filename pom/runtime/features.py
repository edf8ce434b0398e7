"""SpeechBrain's ``Fbank`` in numpy: the features an exported ONNX model reads.

With ``w`` the STFT window (SpeechBrain's periodic Hamming window, centred in
``n_fft``), ``hop`` the frame step and ``M`` SpeechBrain's triangular mel
filterbank (``[n_fft/2 + 1, n_mels]``), frame ``i`` of a waveform ``s`` zero-padded
by ``n_fft/2`` on each side (``torch.stft(center=True, pad_mode="constant")``) is

.. math::

    P_i(f) &= \\Big| \\sum_{n < n_{fft}} w_n \\, s_{i \\cdot hop + n} \\, e^{-2\\pi j f n / n_{fft}} \\Big|^2 \\\\
    F_i &= 10 \\log_{10} \\max(P_i M, a_{min}), \\qquad
    F_i \\leftarrow \\max\\big(F_i, \\max_{i', m} F_{i'm} - \\mathrm{top\\_db}\\big)

(``1 + samples // hop`` frames; the ``top_db`` clip uses the maximum over the
whole utterance). The window, the filterbank and the constants are taken from
the model's own ``Fbank`` at export time and saved in ``fbank.npz``
(:func:`save_fbank` with PyTorch, :class:`Fbank` without), so the filters are
SpeechBrain's, not a re-derivation; ``tests/test_onnx.py`` checks the features
against SpeechBrain's on speech, silence and noise.

Example
-------
>>> import numpy as np
>>> window = np.hanning(8)
>>> mel = np.abs(np.random.default_rng(0).standard_normal((5, 3)))
>>> fbank = Fbank(window, mel, hop=4)
>>> fbank(np.random.default_rng(1).standard_normal(40).astype(np.float32)).shape
(11, 3)
"""

import numpy as np

#: Frames computed at once (the ``[frames, n_fft]`` windowed block is the largest array).
BLOCK_FRAMES = 2000


class Fbank:
    """Log-mel filterbank features of SpeechBrain's ``Fbank`` (see the module docstring).

    Arguments
    ---------
    window : numpy.ndarray
        ``[n_fft]`` window (zero-padded to ``n_fft`` as ``torch.stft`` does).
    mel : numpy.ndarray
        ``[n_fft // 2 + 1, n_mels]`` filterbank.
    hop : int
        Frame step in samples.
    top_db : float or None
        Dynamic range below the utterance's maximum (None: no clip).
    amin : float
        Floor of the power before the logarithm.
    multiplier : float
        dB multiplier (10 for power spectra).
    """

    def __init__(self, window, mel, hop, top_db=80.0, amin=1e-10, multiplier=10.0):
        self.window = np.asarray(window, dtype=np.float64)
        self.mel = np.asarray(mel, dtype=np.float64)
        self.n_fft, self.hop = len(self.window), int(hop)
        if self.mel.shape[0] != self.n_fft // 2 + 1:
            raise ValueError(
                f"the filterbank has {self.mel.shape[0]} rows, expected n_fft // 2 + 1 ({self.n_fft // 2 + 1})"
            )
        self.top_db = None if top_db is None else float(top_db)
        self.amin, self.multiplier = float(amin), float(multiplier)

    @classmethod
    def load(cls, path):
        """The features saved by :func:`save_fbank` (``fbank.npz``)."""
        with np.load(path) as saved:
            top_db = float(saved["top_db"])
            return cls(saved["window"], saved["mel"], int(saved["hop"]), None if np.isnan(top_db) else top_db,
                       float(saved["amin"]), float(saved["multiplier"]))  # fmt: skip

    @property
    def n_mels(self):
        """Number of mel bands."""
        return self.mel.shape[1]

    def frames(self, num_samples):
        """Frames of ``num_samples`` samples: ``1 + num_samples // hop``."""
        return 1 + int(num_samples) // self.hop

    def __call__(self, wav):
        """``[frames, n_mels]`` float32 features of a mono waveform ``[samples]``."""
        wav = np.asarray(wav, dtype=np.float64).reshape(-1)
        half = self.n_fft // 2
        padded = np.concatenate([np.zeros(half), wav, np.zeros(half)])
        frames = self.frames(len(wav))
        windows = np.lib.stride_tricks.sliding_window_view(padded, self.n_fft)[:: self.hop][:frames]
        out = np.empty((frames, self.n_mels), dtype=np.float64)
        for start in range(0, frames, BLOCK_FRAMES):
            spectrum = np.fft.rfft(windows[start : start + BLOCK_FRAMES] * self.window, axis=-1)
            power = spectrum.real**2 + spectrum.imag**2
            out[start : start + BLOCK_FRAMES] = self.multiplier * np.log10(np.maximum(power @ self.mel, self.amin))
        if self.top_db is not None and frames:
            np.maximum(out, out.max() - self.top_db, out=out)
        return out.astype(np.float32)


def save_fbank(fbank, path):
    """Saves SpeechBrain's ``Fbank`` module ``fbank`` (no deltas or context, centred STFT with
    constant padding) as ``fbank.npz`` for :class:`Fbank`. Needs PyTorch (export time only)."""
    import torch

    stft, filterbank = fbank.compute_STFT, fbank.compute_fbanks
    if fbank.deltas or fbank.context or not stft.center or stft.pad_mode != "constant" or stft.normalized_stft:
        raise ValueError(
            "only SpeechBrain's Fbank without deltas or context, centred STFT, constant padding is exported"
        )
    n_fft, win = int(stft.n_fft), stft.window.detach().double().cpu().numpy()
    window = np.zeros(n_fft)
    left = (n_fft - len(win)) // 2
    window[left : left + len(win)] = win
    bins = n_fft // 2 + 1
    if not filterbank.log_mel:
        raise ValueError("only SpeechBrain's Fbank with log-mel features (log_mel=True) is exported")
    filterbank.log_mel = False
    try:
        with torch.no_grad():
            mel = filterbank(torch.eye(bins).unsqueeze(0))[0].double().numpy()
    finally:
        filterbank.log_mel = True
    top_db = float(filterbank.top_db)
    if float(filterbank.db_multiplier) != 0.0:
        raise ValueError("only SpeechBrain's Fbank with ref_value 1 (no dB offset) is exported")
    np.savez(
        path, window=window, mel=mel, hop=int(stft.hop_length), top_db=top_db, amin=float(filterbank.amin),
        multiplier=float(filterbank.multiplier), sample_rate=int(stft.sample_rate),
    )  # fmt: skip
