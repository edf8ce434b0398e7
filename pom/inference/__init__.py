"""The one place that runs a trained model (PyTorch): CNN + encoder + CTC head.

* :class:`~pom.inference.ctc_model.CTCModel`: waveforms -> CTC log-probabilities,
  whole input (a padded batch), bounded-memory long form (``whole`` or
  ``segments``), streaming for causal models, and the pass from features with
  frame counts that the ONNX export traces;
* :mod:`~pom.inference.pieces`: Fbank and CNN front end in bounded pieces;
* :mod:`~pom.inference.transcriber`: files -> transcripts through SpeechBrain's
  ``EncoderASR`` (what ``python -m pom.transcribe --model RUN`` runs).

The passes over one layer and one mixer are methods of those classes
(:meth:`pom.conformer_layer.MixerConformerLayer.forward_bounded`,
:meth:`pom.mixers.base.TokenMixer.forward_bounded`, ``forward_streaming``);
:mod:`pom.export`, :mod:`pom.transcribe` and ``benchmarks/`` call this package.
The same model without PyTorch (ONNX Runtime, numpy) is :mod:`pom.runtime`.

Example
-------
>>> CTCModel.OPTIONS[:2]
('long_form', 'long_seconds')
"""

from pom.inference.ctc_model import CTCModel, bounded_encode, normalize_masked, valid_frames

__all__ = ["CTCModel", "bounded_encode", "normalize_masked", "valid_frames"]
