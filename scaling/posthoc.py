"""Post-hoc EMA in a grid, what is due and where: at a run's last evaluation point the EMA of each length in
`eval.ema_sigma_rels` (reconstructed from the run's snapshots by `dit.posthoc_ema`) is scored on the validation
loss, and the lengths in `eval.ema_sample_sigma_rels` also in every sampling setting (`scaling.runs` does it,
`scaling.run_state` counts it done, `scaling.cost` prices it). Each record carries `ema_sigma_rel`, a column of
the results table and part of a row's key (empty for the classic EMA)."""
from pathlib import Path

from study.layout import RunLayout


def point_checkpoint(layout: RunLayout, step: int, sigma_rel: float | None) -> Path:
    """The checkpoint an evaluation reads: the run's own at `step`, or the post-hoc EMA of `sigma_rel` there."""
    return layout.checkpoint(step) if sigma_rel is None else layout.posthoc_checkpoint(step, sigma_rel)


def posthoc_point(run, step: int) -> bool:
    """Whether the post-hoc lengths are evaluated at `step`: the run's last point, when the grid lists any."""
    return bool(run.eval.ema_sigma_rels) and step == run.eval_points()[-1]


def posthoc_settings(run, step: int) -> list:
    """The sampling settings the post-hoc lengths add at `step`: every setting of the point once per sampled
    length (none but at the last point); what `scaling.cost` prices beside `point_settings`."""
    from scaling.evaluation import point_settings

    if not posthoc_point(run, step):
        return []
    return [setting for _ in run.eval.ema_sample_sigma_rels for setting in point_settings(run, step)]


def validated(run) -> bool:
    """Whether the grid's data gives validation losses (a held-out split, and validation_items asked)."""
    from dit.validate import has_held_out

    return run.eval.validation_items > 0 and has_held_out(run.data.dataset, run.data.codec)


def posthoc_done(run, layout: RunLayout, step: int) -> bool:
    """Whether every record of the post-hoc lengths at `step` exists (True where none are due)."""
    from scaling.evaluation import point_settings

    if not posthoc_point(run, step):
        return True
    e = run.eval
    records = [layout.posthoc_validation_record(step, s) for s in e.ema_sigma_rels if validated(run)]
    records += [layout.posthoc_eval_record(step, setting.file_stem, s)
                for s in e.ema_sample_sigma_rels for setting in point_settings(run, step)]
    return all(path.exists() for path in records)
