"""The research tools: benchmarks, experiment grids, the results database, the law, figures and the report.

  bench/         data generators by name (BENCHMARKS): phonebook, stress, rule
  runs.py        one experiment point -> one flat result row (compare, bench and sweep share it)
  rows.py        ResultRow: a row as the results store gives it back, typed; what law, plots, report and claims take
  results.py     the SQLite results store of the runs (not the memory store: that is memft.memory); read_rows
  grids.py       the compare and bench grids: model, data, points and resolved settings, built before any training
  sweep/         sweep configs (config.py), one process's runner (worker.py), local and Ray (backends.py), run_sweep
  law/           the law: row selection, fit (LawFit), bootstrap and held-out error, setting names, law fit files
                 (LawFitEntry, Budget), the capacity planner; data/: a shipped law fit
  ranksearch.py  --rank auto
  plots/         figures: functions of rows that return a matplotlib Figure (law fits, rank × ℓ grids, positions)
  stats.py       paired t intervals, power and seeds needed, Spearman with its interval (one definition each)
  verdict.py     the verdict rule (identity / reproduced / refuted / inconclusive / untested) and Claim
  cells.py       comparison cells: every metric side by side, paired with SFT, where capacity binds, the budget check
  transitions.py the identities of the phase transition and Spearman by the paper's definition
  claims.py      the paper's claims against the stored runs
  report.py      the static HTML report

Research layer: may import the core and the other research modules; never the memory store, the checks,
integrations or the CLI.
"""
