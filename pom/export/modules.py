"""The module an exported pre-trained encoder's ``hyperparams.yaml`` builds (besides
SpeechBrain's and :mod:`pom.encoder`; a fine-tuned model's is :class:`pom.inference.CTCModel`).

:class:`WaveformMixerEncoder` is the ``encoder`` module of an exported
pre-trained encoder, the one ``speechbrain.inference.encoders.WaveformEncoder``
calls as ``encoder(wavs, wav_lens)``. SpeechBrain's ``encode_file`` returns the
``"embeddings"`` entry of what ``encode_batch`` returns, so the module returns a
dict: ``"embeddings"`` ``[B, T, d_model]``, and ``"hidden_states"``
``[num_layers + 1, B, T, d_model]`` when its encoder gives every layer's output
(``output_hidden_states``).

Example
-------
>>> from speechbrain.lobes.features import Fbank
>>> from speechbrain.processing.features import InputNormalization
>>> from speechbrain.lobes.models.convolution import ConvolutionFrontEnd
>>> from pom.encoder import MixerEncoder
>>> cnn = ConvolutionFrontEnd((8, 10, 80), num_blocks=2, num_layers_per_block=1, out_channels=(8, 8),
...                           kernel_sizes=(3, 3), strides=(2, 2), residuals=(False, False))
>>> enc = MixerEncoder(160, d_model=16, num_layers=2, d_ffn=32, mixer="pom", output_hidden_states=True)
>>> model = WaveformMixerEncoder(Fbank(n_mels=80), InputNormalization(norm_type="sentence"), cnn, enc).eval()
>>> out = model(torch.randn(2, 16000), torch.tensor([1.0, 0.5]))
>>> out["embeddings"].shape, out["hidden_states"].shape
(torch.Size([2, 26, 16]), torch.Size([3, 2, 26, 16]))

Authors
 * pom-speech contributors 2025
"""

import torch


class WaveformMixerEncoder(torch.nn.Module):
    """Waveforms -> features -> normaliser -> CNN front end -> encoder.

    Arguments
    ---------
    compute_features : callable
        Waveforms ``[B, samples]`` -> features ``[B, frames, n_mels]`` (SpeechBrain's ``Fbank``).
    normalize : torch.nn.Module
        ``normalize(features, lengths)`` (SpeechBrain's ``InputNormalization``).
    CNN : torch.nn.Module
        The front end (SpeechBrain's ``ConvolutionFrontEnd``).
    encoder : pom.encoder.MixerEncoder
        The encoder, called as ``encoder(x, wav_lens)``.
    """

    def __init__(self, compute_features, normalize, CNN, encoder):
        super().__init__()
        self.compute_features = compute_features
        self.normalize = normalize
        self.CNN = CNN
        self.encoder = encoder

    def forward(self, wavs, wav_lens=None):
        """``wavs`` ``[B, samples]``, ``wav_lens`` relative lengths ``[B]`` (None: all 1);
        returns ``{"embeddings": [B, T, d_model]}`` (and ``"hidden_states"``)."""
        if wav_lens is None:
            wav_lens = torch.ones(wavs.shape[0], device=wavs.device)
        feats = self.normalize(self.compute_features(wavs), wav_lens)
        out = self.encoder(self.CNN(feats), wav_lens)
        if isinstance(out, tuple):
            out, hidden = out
            return {"embeddings": out, "hidden_states": torch.stack(hidden)}
        return {"embeddings": out}
