"""What a run evaluates at each of its points, listed once: the runner samples and scores exactly these
settings, `scaling.cost` prices them and `scaling status` names the one it shows.

Every evaluation point samples `eval.sampling_steps` x `eval.cfg_scales`; the last point also samples
`eval.final_sampling_steps` without guidance (FID against sampling compute, the paper's Fig. 10).
"""
import dataclasses

from scaling.grid import RunSpec


@dataclasses.dataclass(frozen=True)
class EvalSetting:
    """One way of sampling and scoring a checkpoint (a column group of the results table)."""

    sampler: str
    sampling_steps: int
    cfg_scale: float
    features: str
    metrics: tuple[str, ...]  # eval.metric_groups names
    num_samples: int

    @property
    def file_stem(self) -> str:
        """The name of the setting's record and samples at a point."""
        return f"{self.sampler}-{self.sampling_steps}-cfg{self.cfg_scale:g}-{self.features}"

    def key(self) -> dict:
        """The setting's columns of the results table's key, as its evaluation record holds them."""
        return {"sampler": self.sampler, "sampling_steps": self.sampling_steps, "cfg_scale": self.cfg_scale,
                "features": self.features}


def point_settings(run: RunSpec, step: int) -> list[EvalSetting]:
    """The settings evaluated at the run's point `step`, in the order the runner evaluates them:
    steps x guidance scales, and at the last point the unguided `final_sampling_steps` after them."""
    e = run.eval

    def setting(steps: int, cfg: float) -> EvalSetting:
        return EvalSetting(e.sampler, steps, cfg, e.features, tuple(e.metrics), e.num_samples)

    settings = [setting(steps, cfg) for steps in e.sampling_steps for cfg in e.cfg_scales]
    if step == run.eval_points()[-1]:
        settings += [setting(steps, 1.0) for steps in e.final_sampling_steps]
    return list(dict.fromkeys(settings))


def headline_setting(run: RunSpec) -> EvalSetting:
    """The setting of every point whose newest record `scaling status` shows: the first one."""
    return point_settings(run, run.eval_points()[0])[0]
