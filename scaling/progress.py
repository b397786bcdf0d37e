"""How far a grid has come and the training time it has left, from its runs' states (`scaling.run_state`).

A run's remaining training is estimated one way, `RunState.seconds_left` (its own seconds per step x the
steps it has left): `scaling status` shows it per run, `eta_seconds` adds it up over a grid (with a line
fitted to the timed runs for those not timed yet) and `scaling.cost` prices a running grid's training with it.
"""
from scaling.grid import RunSpec
from scaling.run_state import RunState


def eta_seconds(states: list[RunState], runs: list[RunSpec]) -> float | None:
    """Remaining training time: each timed run's `seconds_left`; for a run not timed yet, a line
    seconds = overhead + rate x Gflops fitted to the measured runs. None until runs of two
    sizes are timed when some run has not started (one size cannot tell overhead from rate)."""
    import numpy as np

    from scaling.flops import gflops

    flops = {r.label: gflops(r.dit_config()) for r in runs}
    measured = [(flops[s.name], s.seconds_per_step) for s in states if s.seconds_per_step]
    left = [s for s in states if s.state != "done"]
    unstarted = [s for s in left if not s.seconds_per_step]
    if not measured or unstarted and len({x for x, _ in measured}) < 2:
        return None
    timed = sum(s.seconds_left() for s in left if s.seconds_per_step)
    if not unstarted:
        return timed
    rate, overhead = (max(float(c), 0.0) for c in np.polyfit(*np.array(measured).T, 1))
    return timed + sum((s.steps - s.step) * (overhead + rate * flops[s.name]) for s in unstarted)


def grid_progress(states: list[RunState], runs: list[RunSpec]) -> str:
    """One line: runs done / started (running or interrupted) / not started, and the training time left."""

    def count(state):
        return sum(s.state == state for s in states)

    from scaling.cost import device_type, executor_layout

    eta = eta_seconds(states, runs)
    at_once = executor_layout(runs[0].executor)[1] if runs and device_type(runs[0].executor) == "cpu" else 1
    workers = min(at_once, max(1, len(states) - count("done")))  # on GPUs how many are free is not known here
    eta_text = f"; about {eta / 60 / workers:.0f} min of training left" if eta else ""
    eta_text += f" ({workers} runs at once)" if eta and workers > 1 else ""
    failed = f", {count('failed')} failed" if count("failed") else ""
    return (f"{count('done')} done, {count('training')} started{failed}, {count('pending')} not started of "
            f"{len(states)} runs{eta_text}")
