#!/usr/bin/env python
"""FLOPs of one mixer layer against input length (PyTorch's FlopCounterMode on
the ``meta`` device: instant, no memory, any length).

Mixers and sizes are those of ``benchmarks/efficiency.py`` (the parameter-matched
pre-training encoders). Writes ``flops.csv``, ``flops.png`` (log-log) and prints
a Markdown table of GFLOPs per layer (batch 1) and the growth ratio
``flops(2T) / flops(T)`` at the longest lengths (2 = linear, 4 = quadratic).

Example
-------
python benchmarks/flops.py --out benchmarks/runs/flops
"""

import argparse
import csv
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]

from efficiency import FRAMES_PER_SECOND, MODELS  # noqa: E402

from pom.flops import mixer_flops  # noqa: E402

DEFAULT = ["relposmhaxl", "ropemha", "mha", "summarymixing", "pom", "pom_selective", "pom_frequency"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mixers", nargs="+", default=DEFAULT, choices=[m for m in MODELS if not m.endswith("_chunked")])
    p.add_argument("--seconds", nargs="+", type=int, default=[10, 20, 40, 80, 160, 320, 640, 1280])
    p.add_argument("--backward", action="store_true", help="count forward + backward")
    p.add_argument("--out", default=os.path.join(HERE, "out"))
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    rows = []
    for name in args.mixers:
        spec = MODELS[name]
        for s in args.seconds:
            frames = s * FRAMES_PER_SECOND // 4
            flops = mixer_flops(spec["mixer"], spec["d_model"], frames, backward=args.backward, **spec["mixer_options"])
            rows.append(dict(mixer=name, d_model=spec["d_model"], seconds=s, frames=frames, gflops=flops / 1e9))
    with open(os.path.join(args.out, "flops.csv"), "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    header = "| mixer (d_model) | " + " | ".join(f"{s} s" for s in args.seconds) + f" | {args.seconds[-1]} s / {args.seconds[-2]} s |"
    lines = [header, "|---|" + "---|" * (len(args.seconds) + 1)]
    for name in args.mixers:
        mine = [r for r in rows if r["mixer"] == name]
        ratio = mine[-1]["gflops"] / mine[-2]["gflops"]
        lines.append(f"| {name} ({mine[0]['d_model']}) | " + " | ".join(f"{r['gflops']:.1f}" for r in mine) + f" | {ratio:.2f} |")
    what = "forward + backward" if args.backward else "forward"
    print(f"GFLOPs of one mixer layer, {what}, batch 1 (25 frames per second after the CNN):\n")
    print("\n".join(lines))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name in args.mixers:
        mine = [r for r in rows if r["mixer"] == name]
        ax.plot([r["seconds"] for r in mine], [r["gflops"] for r in mine], marker="o", label=name)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("input length (s)")
    ax.set_ylabel(f"GFLOPs per mixer layer ({what}, batch 1)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    ax.set_title("Mixer FLOPs: linear (slope 1) vs quadratic (slope 2)", fontsize=10)
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "flops.png"), dpi=120)
    return 0


if __name__ == "__main__":
    sys.exit(main())
