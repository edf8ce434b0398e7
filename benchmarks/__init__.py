"""Efficiency benchmarks of the pre-training encoders (scripts; see RESULTS.md).

``efficiency.py`` times the encoders against input length, ``long_recordings.py``
transcribes long recordings and runs the encoders alone up to 60 minutes,
``check.py`` compares the chunked and fused PoM with the plain one, ``floor.py``
sets one PoM layer against its matmul / bandwidth floor and ``flops.py`` counts
each mixer's FLOPs; ``common.py`` holds what they share (with the measurement
core in :mod:`pom.measure`, which ``make demo`` uses too). Run them from the
repository root as modules: ``python -m benchmarks.<script>``.
"""
