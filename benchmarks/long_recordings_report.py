"""The outputs of ``python -m benchmarks.long_recordings``: its CSV, its Markdown tables and
targets (reported, never asserted) and its plot of time and memory against length."""

import csv
import math

from benchmarks import common
from pom.measure import encoders as measure_encoders
from pom.measure.encoders import draw_encoders, encoder_sources, encoder_table
from pom.measure.plots import draw_against_length, length_label

CSV_FIELDS = [
    "kind", "name", "path", "seconds", "status", "wall_s", "rtf", "peak_rss_MiB", "extra_rss_MiB", "WER", "CER",
    "utt_WER", "utt_CER", "dCER", "utterances", "params_M", "source",
]  # fmt: skip


def read_csv(path):
    """Rows of a ``long_recordings.csv``, numbers parsed (for ``--from-csv``)."""
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            for key, value in row.items():
                if key not in ("kind", "name", "path", "status", "source") and value not in (None, ""):
                    row[key] = float(value)
            rows.append(row)
    return rows


def write_csv(rows, path):
    measure_encoders.write_csv(rows, path, fields=CSV_FIELDS)


def _num(value, fmt):
    return format(value, fmt) if isinstance(value, (int, float)) and not math.isnan(value) else "-"


def transcription_table(rows):
    rows = [r for r in rows if r["kind"] == "transcribe"]
    if not rows:
        return ""
    lines = ["| length | path | status | time (s) | RTF | peak RSS (MiB) | WER | CER | dCER (points) |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        lines.append(
            f"| {length_label(r['seconds'])} | {r['path']} | {r['status']} | {_num(r.get('wall_s'), '.1f')} | "
            f"{_num(r.get('rtf'), '.3f')} | {_num(r.get('peak_rss_MiB'), '.0f')} | {_num(r.get('WER'), '.2f')} | "
            f"{_num(r.get('CER'), '.2f')} | {_num(r.get('dCER'), '+.2f')} |"
        )
    return "\n".join(lines)


def targets(rows, encoder_size="full"):
    """The targets, reported (never asserted): ``[(target, measured, verdict), ...]``; those of the
    ~95 M PoM encoder only when the encoders were measured at full size."""

    def longest(kind, name=None, path=None):
        mine = [r for r in rows if r["kind"] == kind and (name is None or r["name"] == name) and r["path"] == path]
        return max(mine, key=lambda r: r["seconds"]) if mine else None

    out = []
    for path in ("whole", "segments"):
        r = longest("transcribe", path=path)
        if r is None:
            continue
        what = f"{length_label(r['seconds'])}, {path}: {r['status']}"
        if r["status"] == "ok":
            what += f", peak RSS {r['peak_rss_MiB'] / 1024:.2f} GiB"
            verdict = "met" if r["seconds"] >= 3600 and r["peak_rss_MiB"] < 2048 else "not met"
            if r["seconds"] < 3600:
                verdict = "not measured at 60 min"
        else:
            verdict = "not met"
        out.append(("60 min in one call, peak RSS < 2 GB (demo model)", what, verdict))
    r = longest("encoder", "pom", "bounded")
    if r is not None and encoder_size == "full":
        ok = r["status"] == "ok"
        size = f"{r.get('params_M', '?')} M" if ok else "?"
        what = f"{length_label(r['seconds'])} ({size}): " + (
            f"peak RSS {r['peak_rss_MiB'] / 1024:.2f} GiB, RTF {r['rtf']:.3f}" if ok else r["status"]
        )
        full = ok and r["seconds"] >= 3600 and r.get("params_M", 0) >= 80
        out.append(
            (
                "PoM encoder (~95 M), 60 min: peak RSS < 4 GB",
                what,
                ("met" if r["peak_rss_MiB"] < 4096 else "not met") if full else "not measured at full size",
            )
        )
        out.append(("PoM encoder (~95 M), 60 min: RTF < 0.1", what,
                    ("met" if r["rtf"] < 0.1 else "not met") if full else "not measured at full size"))  # fmt: skip
    for path in ("whole", "segments"):
        mine = [r for r in rows if r["kind"] == "transcribe" and r["path"] == path and r["status"] == "ok"]
        if mine:
            worst = max(mine, key=lambda r: r.get("dCER", -math.inf) if r.get("dCER", "") != "" else -math.inf)
            dcer = worst.get("dCER", "")
            what = ", ".join(f"{length_label(r['seconds'])} {_num(r.get('dCER'), '+.2f')}" for r in mine)
            verdict = "not measured" if dcer == "" else ("met" if dcer <= 2.0 else "not met")
            out.append((f"{path}: CER within 2 points of utterance-by-utterance decoding", what, verdict))
    return out


def markdown(rows, env, args):
    lines = [
        "# Long recordings",
        "",
        common.environment_line(env) + f"; {args.threads} threads",
        "",
        f"command: `{env['command']}`",
        "",
    ]
    table = transcription_table(rows)
    if table:
        lines += [
            f"## Transcription: `{args.model}`, {args.split} utterances concatenated, {args.decoding} decoding",
            "",
            f"segments: {args.segment_seconds:g} s windows, >= {args.overlap_seconds:g} s overlap; time = reading "
            "and decoding (model loading excluded); peak RSS of the process; dCER = CER - the utterance-by-utterance "
            "CER (`utterances`: each utterance decoded alone, times summed)",
            "",
            table,
            "",
        ]
    table = encoder_table(rows)
    if table:
        sources = encoder_sources([r for r in rows if r["kind"] == "encoder"])
        lines += [
            f"## Encoders alone ({args.encoder_size} size), one forward without autograd, batch 1",
            "",
            "time, peak RSS of the process; bounded = CNN in pieces, layers in time chunks (pom.inference); "
            "plain = the module's forward",
            "",
            table,
            "",
            "models: " + "; ".join(sources),
            "",
        ]
    judged = targets(rows, args.encoder_size)
    if judged:
        lines += ["## Targets (reported, not asserted)", "", "| target | measured | verdict |", "|---|---|---|"]
        lines += [f"| {t} | {m} | {v} |" for t, m, v in judged]
    return "\n".join(lines) + "\n"


def plot(rows, path, title):
    """Time and memory against length (log axes): transcription paths (peak RSS of the process),
    then the encoders (peak RSS minus the RSS before the forward: the activations)."""
    kinds = [kind for kind in ("transcribe", "encoder") if any(r["kind"] == kind for r in rows)]
    fig, axes = common.figure(len(kinds) or 1)
    for i, kind in enumerate(kinds):
        if kind == "encoder":
            draw_encoders(axes[i], rows)
        else:
            mine = [r for r in rows if r["kind"] == kind]
            draw_against_length(axes[i], mine, ("peak_rss_MiB", "peak RSS (MiB)"), "recording length",
                                "transcription (one call)", label=lambda name, route: route)  # fmt: skip
    common.save_figure(fig, path, title)
