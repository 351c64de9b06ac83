"""The research tools: benchmarks, experiment grids, the results database, the law, figures and the report.

  bench/         data generators by name (BENCHMARKS): phonebook, stress, rule
  runs.py        one experiment point -> one flat result row (compare, bench and sweep share it)
  results.py     the SQLite results store of the runs (not the memory store: that is memft.memory)
  sweep.py       sweep configs and the resumable runner (local or Ray)
  law.py         the law fit, bootstrap, held-out error, setting names, capacity planner; data/: a shipped law fit
  ranksearch.py  --rank auto
  plots.py       figures: functions of rows that return a matplotlib Figure
  claims.py      the paper's claims against the stored runs
  report.py      the static HTML report

Research layer: may import the core and the other research modules; never the memory store, the checks,
integrations or the CLI.
"""
