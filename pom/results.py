"""The paper's WER table from finished fine-tuning runs.

Every fine-tuning run (``recipes/LibriSpeech/finetune/train.py``) writes
``results.json`` (``results_lm.json`` for a test with an n-gram LM, by
choice of ``--results_file``) in its output folder: the mixer, the parameter counts and the
WER/CER per evaluation split. This module gathers them into one table, one row
per run, as the paper shows it (parameters, dev-clean, dev-other, test-clean,
test-other), printed as Markdown and CSV::

    python -m pom.results results/finetune/*/1000          # WER, Markdown then CSV
    python -m pom.results results/finetune --metric CER    # folders are searched
    python -m pom.results --paper                          # the published figures

Example
-------
>>> run = {"mixer": "pom", "params_encoder": 89_300_000, "pretrained": "x",
...        "splits": {"test-clean": {"WER": 8.31, "CER": 2.5}}}
>>> rows = table_rows([("a", run)])
>>> print(to_markdown(rows))
| model | params (M) | dev-clean | dev-other | test-clean | test-other |
|---|---|---|---|---|---|
| pom | 89.3 | - | - | 8.31 | - |
>>> print(to_csv(rows).strip())
model,params_M,dev-clean,dev-other,test-clean,test-other
pom,89.3,,,8.31,

Authors
 * pom-speech contributors 2025
"""

import argparse
import csv
import io
import json
import os
import sys

from pom.recipe.paper import PAPER_ROWS, SOURCES, commands

SPLITS = ("dev-clean", "dev-other", "test-clean", "test-other")
RESULTS_FILE = "results.json"

PAPER_COLUMNS = ("model", "size", "test-clean", "test-clean +LM", "test-other", "test-other +LM", "experiment")


def find_runs(paths):
    """``(folder, results dict)`` for every ``results.json`` in or under ``paths``
    (a run folder, a ``results.json`` file, or a folder of runs), sorted by folder.

    Raises ``FileNotFoundError`` naming a path that holds no results.
    """
    runs = []
    for path in paths:
        if os.path.isfile(path):
            files = [path]
        elif os.path.isdir(path):
            files = []
            for root, dirs, names in os.walk(path):
                dirs[:] = sorted(d for d in dirs if d != "save")
                files.extend(
                    os.path.join(root, n) for n in sorted(names) if n.startswith("results") and n.endswith(".json")
                )
        else:
            raise FileNotFoundError(f"{path} does not exist")
        if not files:
            raise FileNotFoundError(f"no {RESULTS_FILE} in {path}: is it a finished fine-tuning run?")
        for file in files:
            try:
                with open(file, encoding="utf-8") as f:
                    runs.append((os.path.dirname(os.path.abspath(file)), json.load(f)))
            except (OSError, json.JSONDecodeError) as err:
                raise ValueError(f"{file}: not a readable results file ({err})") from None
    return sorted(runs, key=lambda r: r[0])


def run_label(result):
    """Row name: the experiment (else the mixer), marked when the run had no
    pre-training or an LM.

    Example
    -------
    >>> run_label({"mixer": "pom", "pretrained": None, "lm": "4gram.arpa"})
    'pom (no pre-training) +LM'
    >>> run_label({"experiment": "pom_large", "mixer": "pom", "pretrained": "x"})
    'pom_large'
    """
    label = str(result.get("experiment") or result.get("mixer", "?"))
    if not result.get("pretrained"):
        label += " (no pre-training)"
    if result.get("lm"):
        label += " +LM"
    return label


def table_rows(runs, metric="WER"):
    """One row per run: label, parameters (CNN + encoder, millions), one value
    per split of :data:`SPLITS` (None where the run did not evaluate it).
    Runs with the same label get their folder name appended."""
    rows = []
    for folder, result in runs:
        params = result.get("params_encoder")
        values = [result.get("splits", {}).get(split, {}).get(metric) for split in SPLITS]
        rows.append([run_label(result), None if params is None else round(params / 1e6, 1), *values, folder])
    labels = [row[0] for row in rows]
    for row in rows:
        if labels.count(row[0]) > 1:
            row[0] = f"{row[0]} [{os.path.basename(row[-1]) or row[-1]}]"
    return [row[:-1] for row in rows]


def _cell(value, empty="-"):
    if value is None:
        return empty
    if isinstance(value, float):
        return f"{value:.2f}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def to_markdown(rows, header=("model", "params (M)", *SPLITS)):
    """Rows as a Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [_cell(v) for v in row]
        if isinstance(row[1], float):
            cells[1] = f"{row[1]:.1f}"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def to_csv(rows, header=("model", "params_M", *SPLITS)):
    """Rows as CSV (empty cells where a split is missing)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(["" if v is None else v for v in row])
    return out.getvalue()


def paper_rows():
    """The published table (:data:`pom.recipe.paper.PAPER_ROWS`) as rows, with the
    experiment that reproduces each."""
    return [[r.model, r.size, *r.published, r.experiment] for r in PAPER_ROWS]


def paper_commands():
    """Markdown: for every published row, its experiment, parameters here,
    the source of its settings and the commands that reproduce it."""
    lines = []
    for row in PAPER_ROWS:
        pretrain, finetune, lm_test = commands(row)
        note = f"; {row.note}" if row.note else ""
        lines += [
            f"* **{row.model}, {row.size}** ({row.params_m:.1f} M here{note}); settings: {SOURCES[row.source]}",
            f"    {pretrain}",
            f"    {finetune}",
            f"    {lm_test}",
        ]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m pom.results",
        description="Prints the WER table (Markdown, then CSV) of finished fine-tuning runs: one row per run "
        "with the CNN + encoder parameters and the WER on dev-clean, dev-other, test-clean, test-other.",
    )
    parser.add_argument(
        "runs", nargs="*", help="fine-tuning output folders (or folders holding them, or results.json files)"
    )
    parser.add_argument("--metric", choices=("WER", "CER"), default="WER", help="error rate to show (default WER)")
    parser.add_argument("--format", choices=("both", "markdown", "csv"), default="both", help="output format")
    parser.add_argument(
        "--paper",
        action="store_true",
        help="also print the paper's published WER (~95 M and ~315 M) and the commands that reproduce every row",
    )
    args = parser.parse_args(argv)
    if not args.runs and not args.paper:
        parser.error("give fine-tuning output folders, or --paper")

    blocks = []
    if args.runs:
        try:
            rows = table_rows(find_runs(args.runs), args.metric)
        except (FileNotFoundError, ValueError) as err:
            print(f"Error: {err}", file=sys.stderr)
            return 1
        if args.format in ("both", "markdown"):
            blocks.append(f"{args.metric} (%)\n\n" + to_markdown(rows))
        if args.format in ("both", "csv"):
            blocks.append(to_csv(rows).rstrip("\n"))
    if args.paper:
        if args.format in ("both", "markdown"):
            blocks.append(
                "Published WER (%), CTC fine-tuning on train-clean-100 (Feillet et al., ICASSP 2026; "
                "(*) from Whetten et al., 2024)\n\n" + to_markdown(paper_rows(), PAPER_COLUMNS)
            )
            blocks.append("Commands ($LS: your LibriSpeech folder; 4-gram.arpa: openslr.org/11)\n\n" + paper_commands())
        if args.format in ("both", "csv"):
            blocks.append(to_csv(paper_rows(), [c.replace(" ", "_") for c in PAPER_COLUMNS]).rstrip("\n"))
    print("\n\n".join(blocks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
