"""What the demo prints and writes at the end: error-rate tables, stage times, outputs.

* :func:`print_results`: the WER and CER tables of every run (``python -m pom.results``'s
  columns), as Markdown and CSV, and the mixer comparison when several mixers ran;
* :func:`stage_table`: wall-clock and CPU time of each stage (CPU: user + system time of the
  stage's processes, above the wall time when several cores work; not measured for the corpus,
  whose synthesis workers are not the demo's child processes);
* :func:`write_summary`: ``demo_summary.json`` (times, results, mixers);
* :func:`print_outputs`: where the corpus, the runs, the LM and the plot are, and a transcription
  command.

Example
-------
>>> print(stage_table({"corpus": 60.0, "total": 90.0}, {"corpus": 100.0, "total": 130.0}))
| stage | wall (min) | CPU (min) |
|---|---|---|
| corpus | 1.0 | 1.7 |
| total | 1.5 | 2.2 |
"""

import os

from pom.recipe.files import write_json


def print_results(found, records):
    """Prints the WER and CER tables of the runs ``found`` (:func:`pom.results.find_runs`) and,
    for several mixers, the comparison table of their ``records``."""
    from pom.demo.mixers import comparison_table
    from pom.results import table_rows, to_csv, to_markdown

    print("\n=== 5/6 results on the synthetic corpus (unseen speakers and sentences)\n")
    for metric in ("WER", "CER"):
        rows = table_rows(found, metric)
        print(f"{metric} (%)\n\n{to_markdown(rows)}\n")
    print(to_csv(table_rows(found, "WER")))
    if len(records) > 1:
        print("The paper's comparison in miniature (parameter-matched encoders, one shared corpus and LM):\n")
        print(comparison_table(records) + "\n")


def stage_table(times, cpu_times):
    """Markdown table of the stages' wall-clock ``times`` and ``cpu_times`` (seconds; example at
    the top of this module)."""
    lines = ["| stage | wall (min) | CPU (min) |", "|---|---|---|"]
    for stage, seconds in times.items():
        cpu = cpu_times.get(stage)
        lines.append(f"| {stage} | {seconds / 60:.1f} | {'-' if cpu is None else f'{cpu / 60:.1f}'} |")
    return "\n".join(lines)


def write_summary(out, times, cpu_times, hours, found, records):
    """Writes ``<out>/demo_summary.json``: stage times (wall and CPU, seconds), corpus size,
    error rates per run and split, and per mixer its size, times and peak memory."""
    summary = {
        "times_s": {k: round(v, 1) for k, v in times.items()},
        "cpu_s": {k: round(v, 1) for k, v in cpu_times.items()},
        "hours": hours,
        "results": {os.path.relpath(folder, out) + (" +LM" if r.get("lm") else ""): r["splits"] for folder, r in found},
        "mixers": {m: {k: r[k] for k in ("params", "d_model", "mixer_options", "times_s", "peak_MiB")}
                   for m, r in records.items()},
    }  # fmt: skip
    path = os.path.join(out, "demo_summary.json")
    write_json(path, summary)
    return path


def first_audio_file(folder):
    """The first ``.flac`` file under ``folder`` (sorted walk), or None."""
    for root, _, names in sorted(os.walk(folder)):
        for name in sorted(names):
            if name.endswith(".flac"):
                return os.path.join(root, name)
    return None


def print_outputs(data, records, lm_path, efficiency, summary_path):
    """Prints where every output is, and a command that transcribes a test file."""
    print(f"Outputs:\n  corpus       {data}")
    for record in records.values():
        print(f"  pre-training {record['pretrain_dir']}  (pretrained/: the exported encoder)")
        for run in record["runs"]:
            print(
                f"  fine-tuning  {run}  (results.json, wer_<split>.txt, train_log.txt"
                + (", results_lm.json)" if lm_path and run.endswith("finetune") else ")")
            )
    if lm_path:
        print(f"  LM           {lm_path}")
    if efficiency:
        print(f"  efficiency   {efficiency}  (PoM vs MHA: time and memory against length)")
    print(f"  summary      {summary_path}")
    some_file = first_audio_file(os.path.join(data, "test-clean"))
    if some_file:
        first = next(iter(records.values()))["runs"][0]
        print(f"Transcribe: python -m pom.transcribe --model {first} {some_file}")
