"""A trained model without PyTorch: ONNX Runtime, numpy and soundfile only.

What ``python -m pom.export RUN OUT --onnx`` writes (``OUT/onnx/``: ``model.onnx``,
``model.int8.onnx``, ``tokens.txt``, ``features.npz``, ``config.json``) is run by

* :mod:`~pom.runtime.features`: SpeechBrain's ``Fbank`` in numpy (the same numbers);
* :mod:`~pom.runtime.ctc`: CTC decoding, greedy and prefix beam search (with a
  KenLM word n-gram when the ``kenlm`` module is there);
* :mod:`~pom.runtime.segments`: long recordings as overlapping windows (the cut
  :class:`pom.inference.CTCModel` makes too);
* :mod:`~pom.runtime.transcriber`: files -> transcripts
  (``python -m pom.transcribe --onnx MODEL_DIR files...``).

Nothing here imports torch (a test checks it).
"""
