"""Leaf modules that every package reads: where a grid's and a run's files live (`layout`) and
what the results table holds (`schema`). They import nothing from `dit`, `eval`, `scaling` or `reports`."""
