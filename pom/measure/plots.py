"""Time and memory against input length: matplotlib panels with log axes, failures written on the lines.

The rows are dicts with ``name``, ``path``, ``seconds``, ``status`` (``"ok"``,
``"oom"``, ``"timeout"``, ...) and the measured values; each ``(name, path)``
is one line. :func:`draw_against_length` draws the time (left) and memory
(right) panels of one group of rows, the lengths as ticks (``30 s``,
``10 min``); a line's first failure is written above its last point.

Example
-------
>>> import os, tempfile
>>> rows = [dict(name="pom", path="bounded", seconds=s, status="ok", wall_s=s / 100, peak_rss_MiB=s)
...         for s in (30, 60)] + [dict(name="mha", path="bounded", seconds=30, status="oom")]
>>> fig, axes = figure(1)
>>> draw_against_length(axes[0], rows, ("peak_rss_MiB", "peak RSS (MiB)"), "input length", "encoders")
>>> path = os.path.join(tempfile.mkdtemp(), "plot.png")
>>> save_figure(fig, path, "a test")
>>> os.path.getsize(path) > 1000, length_label(90), length_label(3600)
(True, '1.5 min', '60 min')
"""

MARKERS = "osD^v<>p*h"


def length_label(seconds):
    """``"30 s"``, ``"1.5 min"``, ``"60 min"``."""
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"


def figure(rows):
    """A figure of ``rows`` x 2 panels (time, memory), for :func:`save_figure`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(rows, 2, figsize=(11, 4 * rows), squeeze=False)


def draw_series(ax, points, key, label, index, scale=1.0):
    """One line of the ``"ok"`` points (x ``seconds``, y ``point[key] / scale``), its first
    failure (``oom``, ``timeout``, ...) written above the line's last point."""
    ok = [p for p in points if p["status"] == "ok" and isinstance(p.get(key), (int, float))]
    ys = [p[key] / scale for p in ok]
    (line,) = ax.plot([p["seconds"] for p in ok], ys, marker=MARKERS[index % len(MARKERS)], label=label)
    failure = next((p for p in points if p["status"] != "ok"), None)
    if failure is not None:
        status = failure["status"].split(" (")[0].split(":")[0]
        ax.annotate(status, (failure["seconds"], ys[-1] if ys else 1.0), color=line.get_color(), fontsize=8,
                    ha="center", textcoords="offset points", xytext=(0, 6))  # fmt: skip
    return line


def draw_against_length(axes, rows, memory, xlabel, title, label=None):
    """Time (``wall_s``, left) and ``memory = (key, axis label)`` (right) of ``rows`` against
    their length on log axes, one line per ``(name, path)``, labelled ``label(name, path)``
    (default ``"name (path)"``)."""
    from matplotlib import ticker

    label = label or (lambda name, path: f"{name} ({path})")
    series = list(dict.fromkeys((r["name"], r["path"]) for r in rows))
    lengths = sorted({r["seconds"] for r in rows})
    for ax, (key, ylabel) in zip(axes, [("wall_s", "time (s)"), memory]):
        for k, (name, path) in enumerate(series):
            points = sorted((r for r in rows if (r["name"], r["path"]) == (name, path)), key=lambda r: r["seconds"])
            draw_series(ax, points, key, label(name, path), k)
        ax.set_xscale("log")
        ax.set_xticks(lengths, [length_label(v) for v in lengths])
        if len(lengths) > 6:
            ax.tick_params(axis="x", labelrotation=35)
        ax.margins(y=0.12)  # room for the failures' labels
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        if any(r["status"] == "ok" and isinstance(r.get(key), (int, float)) and r[key] > 0 for r in rows):
            ax.set_yscale("log")  # (nothing measured: a linear axis with the failures' labels)
            ax.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
            ax.yaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=8)


def save_figure(fig, path, title):
    """Titles, lays out and writes ``fig`` to ``path`` (PNG, 120 dpi), then closes it."""
    import matplotlib.pyplot as plt

    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
