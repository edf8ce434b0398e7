"""Time and memory measurements that ``make demo`` and the benchmark scripts share.

* :mod:`pom.measure.process` -- one measurement in a fresh Python process: its
  own peak resident memory, a time limit, a memory limit, failures as results.
* :mod:`pom.measure.encoders` -- encoders alone (CNN front end + Conformer of an
  experiment file) against input length: one forward per length, each in its
  own process; the rows, their table and their plot.
* :mod:`pom.measure.plots` -- time and memory against length (log axes, failures
  written on the lines).
* :mod:`pom.measure.machine` -- the machine a measurement ran on, for reports.

``benchmarks/`` (a folder of the repository, not installed) holds the scripts
that run them at full size, write the recorded results and judge the targets.
"""
