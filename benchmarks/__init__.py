"""Efficiency benchmarks of the pre-training encoders and the GPU check (see README.md, RESULTS.md).

``efficiency.py`` times the encoders against input length, ``check.py``
compares the chunked and fused PoM with the plain one, ``floor.py`` sets one PoM
layer against its matmul / bandwidth floor, ``flops.py`` counts each mixer's
FLOPs and ``pretrain_cost.py`` measures the paper's pre-training steps at full
size and projects their wall time; ``common.py`` holds what they share.
``gpu_check.py`` (with ``gpu_stages.py``, ``gpu_reports.py``) is ``make
gpu-check``; ``gpu_preflight.py``, ``gpu_imports.py``, ``gpu_bundle.py`` and
``gpu_rehearsal.py`` run it offline. Run from the repository root as
``python -m benchmarks.<module>`` (the measuring scripts also as ``python
benchmarks/<script>.py``).
"""
