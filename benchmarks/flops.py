"""FLOPs of one mixer layer against input length (PyTorch's FlopCounterMode on
the ``meta`` device: instant, no memory, any length).

The mixers are those of the benchmark models (``benchmarks/common.py``: the
encoders of ``hparams/pretrain/<experiment>.yaml`` and their variants), built
on the ``meta`` device; one layer's mixer is counted. Writes ``flops.csv``,
``flops.png`` (log-log) and prints a Markdown table of GFLOPs per layer
(batch 1) and the growth ratio ``flops(2T) / flops(T)`` at the longest lengths
(2 = linear, 4 = quadratic).

Example
-------
python -m benchmarks.flops --out benchmarks/runs/flops
"""

import argparse
import csv
import os
import sys

if __name__ == "__main__" and not __package__:  # run as a file: the package benchmarks is not importable
    sys.exit("run it from the repository root as a module: python -m benchmarks.flops ...")

from benchmarks import common  # noqa: E402
from pom.flops import module_flops  # noqa: E402

DEFAULT_MIXERS = ["relposmhaxl", "ropemha", "mha", "summarymixing", "pom", "pom_selective", "pom_frequency"]


def layer_flops(name, seconds, backward=False):
    """Rows ``{mixer, d_model, seconds, frames, gflops}`` of benchmark model ``name``'s mixer, batch 1."""
    model, hparams = common.build_model(name, layers=1, device="meta")
    mixer = common.mixer_of(model).eval()
    rows = []
    for s in seconds:
        frames = s * common.FRAMES_PER_SECOND // 4
        flops = module_flops(mixer, hparams["d_model"], frames, backward=backward)
        rows.append(dict(mixer=name, d_model=hparams["d_model"], seconds=s, frames=frames, gflops=flops / 1e9))
    return rows


def markdown(rows, names, seconds):
    """GFLOPs per length and the last growth ratio, one line per mixer."""
    header = "| mixer (d_model) | " + " | ".join(f"{s} s" for s in seconds) + f" | {seconds[-1]} s / {seconds[-2]} s |"
    lines = [header, "|---|" + "---|" * (len(seconds) + 1)]
    for name in names:
        mine = [r for r in rows if r["mixer"] == name]
        ratio = mine[-1]["gflops"] / mine[-2]["gflops"]
        lines.append(
            f"| {name} ({mine[0]['d_model']}) | " + " | ".join(f"{r['gflops']:.1f}" for r in mine) + f" | {ratio:.2f} |"
        )
    return "\n".join(lines)


def plot(rows, names, path, what):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name in names:
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
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--mixers",
        nargs="+",
        default=DEFAULT_MIXERS,
        choices=common.model_names(),
        metavar="MODEL",
        help=f"benchmark models: {', '.join(common.model_names())}",
    )
    p.add_argument("--seconds", nargs="+", type=int, default=[10, 20, 40, 80, 160, 320, 640, 1280])
    p.add_argument("--backward", action="store_true", help="count forward + backward")
    p.add_argument("--out", default=os.path.join(common.REPO, "benchmarks", "out"), help="folder for flops.csv/.png")
    args = p.parse_args(argv)
    if len(args.seconds) < 2:
        p.error("--seconds needs at least two lengths (the table ends with their growth ratio)")
    os.makedirs(args.out, exist_ok=True)
    rows = [row for name in args.mixers for row in layer_flops(name, args.seconds, args.backward)]
    with open(os.path.join(args.out, "flops.csv"), "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    what = "forward + backward" if args.backward else "forward"
    print(f"GFLOPs of one mixer layer, {what}, batch 1 (25 frames per second after the CNN):\n")
    print(markdown(rows, args.mixers, args.seconds))
    plot(rows, args.mixers, os.path.join(args.out, "flops.png"), what)
    return 0


if __name__ == "__main__":
    sys.exit(main())
