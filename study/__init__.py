"""Leaf modules that every package reads: where a grid's and a run's files live (`layout`), what the
results table holds (`schema`, `metrics`) and the checked name lookup behind every registry (`registry`).
They import nothing from `dit`, `eval`, `scaling` or `reports`."""
