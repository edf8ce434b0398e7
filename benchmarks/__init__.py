"""Efficiency benchmarks of the pre-training encoders and the GPU check (see README.md, RESULTS.md).

``efficiency.py`` times the encoders against input length, ``long_recordings.py``
transcribes long recordings and runs the encoders alone up to 60 minutes,
``check.py`` compares the chunked and fused PoM with the plain one, ``floor.py``
sets one PoM layer against its matmul / bandwidth floor, ``flops.py`` counts
each mixer's FLOPs, ``pretrain_cost.py`` measures the paper's pre-training
steps at full size and projects their wall time and ``inference.py`` compares
PyTorch with ONNX Runtime; ``common.py`` holds what they share (with the
measurement core in :mod:`pom.measure`, which ``make demo`` uses too).
``gpu_check.py`` (with ``gpu_stages.py``, ``gpu_reports.py``) is ``make
gpu-check``; ``gpu_preflight.py``, ``gpu_imports.py``, ``gpu_bundle.py`` and
``gpu_rehearsal.py`` run it offline. Run them from the repository root as
modules: ``python -m benchmarks.<module>``.
"""
