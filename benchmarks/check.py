#!/usr/bin/env python
"""Chunked and fused PoM against plain PoM on a device: outputs and gradients.

The plain model is the ``pom`` experiment (``hparams/pretrain/pom.yaml``), the
fast ones the same file with ``mixer_options: {implementation: chunked}`` or
``{implementation: fused}`` (the Triton kernels on CUDA; elsewhere the fused
implementation takes the chunked path). Both get the same weights. Compared, in
fp32 and in bf16 autocast, as relative L2 errors:

* ``mixer``: the PoM of the first layer alone, on ``[batch, frames, d_model]``
  (``frames = 100 x seconds``, four times the encoder's length: at 10 s the
  read-out folds ``H`` into ``W_o``) with the last utterance padded from half
  its length;
* ``encoder``: a 2-layer encoder (CNN front end + Conformer) on fbank features
  (``25 x seconds`` frames after the CNN: at 10 s, fewer than ``d_model``, the
  read-out as written), the last utterances at half length (``wav_lens`` 0.5).

Gradients are those of ``sum(out * r)`` for a fixed random ``r``, with respect to
the input and to every parameter (the largest error is reported). Writes
``check.md`` into ``--out``; exits with status 1 if any error is above its
tolerance (1e-4 in fp32, 3e-2 in bf16).

TF32 is off during the check (:func:`pom.precision.tf32_disabled`; importing
SpeechBrain turns it on, and its rounding alone would put 1e-4 to 4e-4 between
two correct implementations); the previous setting is restored after.

Run from the repository root, as a module:

Examples
--------
python -m benchmarks.check --device cuda --out benchmarks/runs/h100
python -m benchmarks.check --device cpu --threads 1 --seconds 2
"""

import argparse
import itertools
import os
import sys

import torch

from benchmarks import common
from pom.precision import tf32_disabled

TOLERANCES = {torch.float32: 1e-4, torch.bfloat16: 3e-2}


def relative_error(a, b):
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def outputs_and_gradients(model, call, x, device, dtype):
    """``(output, input gradient, {parameter name: gradient})`` of one call, all in fp32."""
    x = x.clone().requires_grad_(True)
    model.zero_grad(set_to_none=True)
    with common.autocast(device, dtype):
        out = call(model, x)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(device)
    (out.float() * weights).sum().backward()
    grads = {name: p.grad.float() for name, p in model.named_parameters() if p.grad is not None}
    return out.detach().float(), x.grad.float(), grads


def plain_and_fast_pair(implementation, layers, chunk_size, device):
    """The ``pom`` model and its ``implementation`` variant, same weights, eval mode."""
    plain, hparams = common.build_model("pom", layers=layers)
    fast, _ = common.build_model(f"pom_{implementation}", layers=layers, chunk_size=chunk_size)
    fast.load_state_dict(plain.state_dict())
    return plain.to(device).eval(), fast.to(device).eval(), hparams["d_model"]


def check(device, batch=2, seconds=10, chunk_size=128, implementations=("chunked", "fused"), layers=2):
    """Compares every implementation with plain PoM at the mixer and the
    encoder level, fp32 and bf16, with TF32 off. Returns ``(rows, passed)``."""
    with tf32_disabled():
        return _check(device, batch, seconds, chunk_size, implementations, layers)


def _check(device, batch, seconds, chunk_size, implementations, layers):
    rows, passed = [], True
    frames = seconds * common.FRAMES_PER_SECOND
    for implementation in implementations:
        plain, fast, d_model = plain_and_fast_pair(implementation, layers, chunk_size, device)
        torch.manual_seed(0)
        features = torch.randn(batch, frames, common.N_MELS, device=device)
        lens = torch.tensor([1.0] + [0.5] * (batch - 1), device=device)
        # the mixer on `frames` frames (>= d_model at 10 s: H folded into W_o), the encoder on frames / 4
        # (< d_model at 10 s: the read-out as written): both read-outs compared
        mixer_input = torch.randn(batch, frames, d_model, device=device)
        padding = torch.zeros(batch, frames, dtype=torch.bool, device=device)
        padding[-1, frames // 2 :] = True  # True at padded frames
        levels = {
            "mixer": (lambda model, x: common.mixer_of(model)(x, padding_mask=padding), mixer_input),
            "encoder": (lambda model, x: model(x, lens), features),
        }
        for (level, (call, x)), dtype in itertools.product(levels.items(), TOLERANCES):
            out_ref, gx_ref, gp_ref = outputs_and_gradients(plain, call, x, device, dtype)
            out, gx, gp = outputs_and_gradients(fast, call, x, device, dtype)
            same_parameters = gp.keys() == gp_ref.keys()  # a parameter without gradient on one side fails
            grad_params = max(relative_error(gp[n], gp_ref[n]) for n in gp_ref) if same_parameters else float("inf")
            row = dict(
                implementation=implementation,
                level=level,
                dtype=str(dtype).split(".")[-1],
                out=relative_error(out, out_ref),
                grad_input=relative_error(gx, gx_ref),
                grad_params=grad_params,
                tol=TOLERANCES[dtype],
            )
            row["ok"] = max(row["out"], row["grad_input"], row["grad_params"]) < row["tol"]
            passed &= row["ok"]
            rows.append(row)
    return rows, passed


def markdown(rows):
    lines = [
        "| implementation | level | dtype | output | input grad | param grads (max) | tol | ok |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['implementation']} | {r['level']} | {r['dtype']} | {r['out']:.1e} | {r['grad_input']:.1e} | "
            f"{r['grad_params']:.1e} | {r['tol']:.0e} | {'yes' if r['ok'] else 'NO'} |"
        )
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    common.add_device_arguments(p)
    p.add_argument("--implementations", nargs="+", choices=["chunked", "fused"], default=["chunked", "fused"])
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seconds", type=int, default=10, help="input length (the mixer level gets seconds x 100 frames)")
    p.add_argument("--chunk-size", type=int, default=128, help="frames per chunk (below the length: several chunks)")
    p.add_argument("--out", default=os.path.join(common.REPO, "benchmarks", "out"), help="folder for check.md")
    args = p.parse_args(argv)
    device = common.open_device(args, p)
    env = common.environment(device)
    rows, passed = check(device, args.batch, args.seconds, args.chunk_size, args.implementations)
    report = "\n".join(
        [
            common.environment_line(env),
            f"command: `{env['command']}`",
            "",
            f"Chunked and fused PoM vs plain PoM (relative L2 errors; batch {args.batch}, {args.seconds} s, "
            f"chunk {args.chunk_size}):",
            "",
            markdown(rows),
            "",
        ]
    )
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "check.md"), "w", encoding="utf-8") as f:
        f.write(report)
    print(report + ("all within tolerance" if passed else "FAILED: errors above tolerance"), flush=True)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
