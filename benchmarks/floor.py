#!/usr/bin/env python
"""One PoM layer against its floor: max(FLOPs / matmul rate, bytes / bandwidth).

The PoM mixer of the first layer of the ``pom`` experiment (``--model pom_k3``:
the anchor's k=3, d_model 432), through its ``plain``, ``chunked`` and ``fused``
implementations (``mixer_options: {implementation: ...}``; each built once), is
timed in inference (forward, no autograd) and training (forward + backward) on
``[batch, frames, d_model]`` and set against:

* FLOPs: ``FlopCounterMode``'s count of the plain PoM's matrix products
  (element-wise work is free in this floor; the chunked path recomputes the
  expansion in backward, which is not part of the floor);
* ``R``: the measured dense matmul rate in the benchmark's dtype (one ``n x n``
  product, n = 8192 on GPU, 1536 on CPU);
* ``B``: the measured copy bandwidth (1 GiB on GPU, 128 MiB on CPU, read + write);
* bytes: what a fully fused kernel must move (x in, y out, the weights; in
  training also dy in, dx out and fp32 weight gradients); "unfused bytes" adds
  the five ``[B, T, k*D*d]`` intermediates of the plain implementation
  (projection, GELU, terms, gate logits, gate) written and read once (x3 in
  training);
* the design estimate: what the fused implementation's own kernels must do one
  after the other, ``FLOPs / R + (bytes + passes x [B, T, k*D*d]) / B`` with
  :data:`DESIGN_WIDE_PASSES` (its GEMMs at the measured rate, and every write or
  read of a wide tensor between them at the measured bandwidth);
* "kept for backward": the distinct tensors autograd saves (parameters and the
  input excluded; ``saved_tensors_hooks``).

Writes ``floor.json`` and ``floor.md`` into ``--out``. Run from the repository root.

Examples
--------
python -m benchmarks.floor --device cuda --out benchmarks/runs/h100
python -m benchmarks.floor --device cpu --threads 1 --seconds 80 --batch 6 --out benchmarks/runs/cpu-floor
"""

import argparse
import json
import math
import os
import sys

import torch

from benchmarks import common
from pom.flops import module_flops
from pom.parameters import count_parameters

IMPLEMENTATIONS = ("plain", "chunked", "fused")
MODELS = ["pom", "pom_k3"]  # the PoM models with _chunked and _fused variants (common.VARIANTS)


def measure_device_rates(device, dtype, matmul_size=None, copy_numel=None):
    """Measured dense matmul FLOP/s (in ``dtype``) and copy bandwidth (bytes/s)."""
    gpu = device.type == "cuda"
    n = matmul_size or (8192 if gpu else 1536)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    rate = 2 * n**3 / common.timeit(lambda: a @ b, device, repeats=10 if gpu else 3)
    numel = copy_numel or ((1 << 28) if gpu else (1 << 25))  # 1 GiB / 128 MiB of float32
    src = torch.empty(numel, device=device, dtype=torch.float32).normal_()
    dst = torch.empty_like(src)
    bandwidth = 2 * numel * 4 / common.timeit(lambda: dst.copy_(src), device, repeats=10 if gpu else 5)
    return rate, bandwidth


def saved_activation_bytes(fn, exclude=()):
    """Bytes of the distinct tensors autograd keeps for backward while running
    ``fn()`` (storages of ``exclude``, e.g. the parameters, left out)."""
    from torch.autograd.graph import saved_tensors_hooks

    skip = {t.untyped_storage().data_ptr() for t in exclude}
    storages = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in skip:
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    with saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(storages.values())


def floor_bytes(mode, batch, frames, d_model, width, n_params, elem):
    """``(fused bytes, unfused bytes)`` one PoM layer must move: x, y and the
    weights (training: also dy, dx and fp32 weight gradients); unfused adds the
    plain implementation's five ``[batch, frames, width]`` intermediates
    (projection, GELU, product, gate, gated state), each written and read once
    (three times over in training)."""
    act = batch * frames * d_model * elem
    wide = batch * frames * width * elem
    if mode == "infer":
        fused = 2 * act + n_params * elem
        return fused, fused + 2 * 5 * wide
    fused = 4 * act + n_params * (elem + 4)
    return fused, fused + 3 * 2 * 5 * wide


#: Writes and reads of ``[B, T, k*D*d]`` tensors by the fused implementation (H folded into
#: the output projection), beyond the floor's bytes. Inference: the branch projection a
#: (written by its GEMM, read by the state kernel), the gate logits (written, read by the
#: sigmoid), the gate (written, read by the batched read-out GEMM): 6. Training adds the
#: backward: the gate's gradient (written by the read-out's backward GEMM, read with the gate
#: by the sigmoid's backward, whose output is read by both gate-projection GEMMs), the
#: read-out weight's gradient GEMM reads the gate, the state kernel reads a and writes da,
#: read by both branch-projection GEMMs: 11 more, 17 in all.
DESIGN_WIDE_PASSES = {"infer": 6, "train": 17}


def design_bytes(mode, batch, frames, width, elem, floor_bytes_):
    """Bytes the fused implementation moves: the floor's and :data:`DESIGN_WIDE_PASSES` wide tensors."""
    return floor_bytes_ + DESIGN_WIDE_PASSES[mode] * batch * frames * width * elem


def time_mixer(mixer, mode, x, device, dtype, repeats, warmup):
    """Median seconds of one inference forward or training step of ``mixer``."""
    mixer.train(mode == "train")

    def step():
        if mode == "infer":
            with torch.no_grad(), common.autocast(device, dtype):
                mixer(x)
        else:
            with common.autocast(device, dtype):
                out = mixer(x)
            out.float().sum().backward()

    return common.timeit(step, device, repeats=repeats, warmup=warmup)


def pom_floor(device, dtype, batch, seconds, model="pom", chunk_size=1024, rates=None, repeats=None):
    """Times ``model``'s PoM layer (plain, chunked, fused) in inference and
    training against its floor; ``rates = (FLOP/s, bytes/s)`` skips measuring
    them. Returns ``(info, rows)``."""
    gpu = device.type == "cuda"
    repeats, warmup = repeats or (10 if gpu else 3), 3 if gpu else 1
    rate, bandwidth = rates or measure_device_rates(device, dtype)
    counted, hparams = common.build_model(model, layers=1, device="meta")
    d_model, options = hparams["d_model"], hparams["mixer_options"]
    width = options["degree"] * options["expansion"] * d_model
    frames = seconds * common.FRAMES_PER_SECOND // 4
    elem = torch.finfo(dtype).bits // 8
    n_params = count_parameters(common.mixer_of(counted))
    mixers = {}
    for implementation in IMPLEMENTATIONS:  # each built once, timed in both modes
        torch.manual_seed(0)
        name = model if implementation == "plain" else f"{model}_{implementation}"
        built, _ = common.build_model(name, layers=1, chunk_size=chunk_size)
        mixers[implementation] = common.mixer_of(built).to(device)
    rows = []
    for mode in ("infer", "train"):
        flops = module_flops(common.mixer_of(counted), d_model, frames, batch, backward=mode == "train")
        min_bytes, unfused = floor_bytes(mode, batch, frames, d_model, width, n_params, elem)
        floor = max(flops / rate, min_bytes / bandwidth)
        design = flops / rate + design_bytes(mode, batch, frames, width, elem, min_bytes) / bandwidth
        for implementation, mixer in mixers.items():
            x = torch.randn(batch, frames, d_model, device=device, requires_grad=mode == "train")
            seconds_taken = time_mixer(mixer, mode, x, device, dtype, repeats, warmup)
            saved = math.nan
            if mode == "train":
                with common.autocast(device, dtype):
                    saved = saved_activation_bytes(lambda: mixer(x), exclude=[*mixer.parameters(), x]) / 2**20
            mixer.zero_grad(set_to_none=True)
            rows.append(
                dict(
                    mode=mode,
                    implementation=implementation,
                    time_ms=1000 * seconds_taken,
                    gflop=flops / 1e9,
                    matmul_floor_ms=1000 * flops / rate,
                    bytes_floor_ms=1000 * min_bytes / bandwidth,
                    unfused_bytes_ms=1000 * unfused / bandwidth,
                    floor_ms=1000 * floor,
                    x_floor=seconds_taken / floor,
                    design_ms=1000 * design,
                    x_design=seconds_taken / design,
                    saved_MiB=saved,
                )
            )
    info = dict(
        model=model,
        rate_tflops=rate / 1e12,
        bandwidth_gbs=bandwidth / 1e9,
        batch=batch,
        seconds=seconds,
        frames=frames,
        d_model=d_model,
        degree=options["degree"],
        expansion=options["expansion"],
        dtype=str(dtype).split(".")[-1],
    )
    return info, rows


def markdown(info, rows):
    lines = [
        f"PoM mixer of `{info['model']}`: d_model {info['d_model']}, k={info['degree']}, D={info['expansion']}, "
        f"batch {info['batch']}, {info['seconds']} s ({info['frames']} frames), {info['dtype']}; measured matmul rate "
        f"{info['rate_tflops']:.2f} TFLOP/s, copy bandwidth {info['bandwidth_gbs']:.1f} GB/s.",
        "",
        "| mode | implementation | time (ms) | GFLOP | matmul floor (ms) | bytes floor (ms) | unfused bytes (ms) "
        "| time / floor | fused design (ms) | time / design | kept for backward (MiB) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        saved = "" if math.isnan(r["saved_MiB"]) else f"{r['saved_MiB']:.1f}"
        lines.append(
            f"| {r['mode']} | {r['implementation']} | {r['time_ms']:.2f} | {r['gflop']:.1f} | "
            f"{r['matmul_floor_ms']:.2f} | {r['bytes_floor_ms']:.3f} | {r['unfused_bytes_ms']:.2f} | "
            f"{r['x_floor']:.1f} | {r['design_ms']:.3f} | {r['x_design']:.2f} | {saved} |"
        )
    lines += [
        "",
        f"Fused design: the floor's matrix products plus {DESIGN_WIDE_PASSES['infer']} (inference) / "
        f"{DESIGN_WIDE_PASSES['train']} (training) writes and reads of [B, T, k*D*d] tensors between kernels.",
    ]
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    common.add_device_arguments(p)
    p.add_argument("--model", choices=MODELS, default="pom", help="PoM model whose layer is timed")
    p.add_argument("--seconds", type=int, help="input length (default GPU 80, CPU 16)")
    p.add_argument("--batch", type=int, help="batch size (default GPU 6, CPU 2)")
    p.add_argument("--dtype", choices=list(common.DTYPES), help="autocast dtype (default GPU bf16, CPU fp32)")
    p.add_argument("--repeats", type=int, help="timed runs (default GPU 10, CPU 3)")
    p.add_argument("--chunk-size", type=int, default=1024, help="frames per chunk of the chunked / fused PoM")
    p.add_argument("--out", default=os.path.join(common.REPO, "benchmarks", "out"), help="folder for floor.json/.md")
    args = p.parse_args(argv)
    device = common.open_device(args, p)
    gpu = device.type == "cuda"
    dtype = common.DTYPES[args.dtype or ("bf16" if gpu else "fp32")]
    env = common.environment(device)
    info, rows = pom_floor(
        device,
        dtype,
        args.batch or (6 if gpu else 2),
        args.seconds or (80 if gpu else 16),
        args.model,
        args.chunk_size,
        repeats=args.repeats,
    )
    text = markdown(info, rows)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "floor.json"), "w", encoding="utf-8") as f:
        json.dump({"env": env, "info": info, "rows": rows}, f, indent=1)
    with open(os.path.join(args.out, "floor.md"), "w", encoding="utf-8") as f:
        f.write("\n".join([common.environment_line(env), f"command: `{env['command']}`", "", text, ""]))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
