"""Post-hoc EMA (EDM2, Karras et al. CVPR 2024, Sec. 3.2 and App. C.3): the EMA of any length, after training.

Training keeps power-function profiles (`dit.ema.PowerEMA`) and writes them every `ema_snapshot_every` steps
into RUN_DIR/ema-snapshots/. A profile of exponent gamma at step t is a weighted average of the weights with the
density p(tau; t, gamma) (`dit.ema`). The EMA of another length at step S, density p_r = p(.; S, gamma_r), is
approximated by the combination sum_i x_i p_i of the stored profiles closest to it in L2:

    A x = b,  A_ij = <p_i, p_j>,  b_i = <p_i, p_r>     (the Gram matrix of the stored profiles, in closed form)

and the reconstructed weights are sum_i x_i theta_hat_i, read one snapshot at a time (memory: one snapshot and
one accumulator per asked length, whatever the number of snapshots). The result is written as a checkpoint whose
`model` and `ema` are those weights, so `scaling sample`, `eval`, `fid` and `export` read it as any other.
"""
import json

import numpy as np
import torch

from dit.ema import SNAPSHOT_DTYPES, check_sigma_rel, gamma_of, profile_inner_product
from dit.io import atomic_torch_save, load_tensors
from study.layout import RunLayout

MIN_SNAPSHOTS = 2  # snapshot steps at or before the reconstructed step; fewer cannot tell lengths apart
SNAPSHOT_KEYS = ("step", "sigma_rels", "gammas", "profiles")


def write_snapshot(run_dir, profiles, precision: str = "fp16"):
    """Write the profiles at their step into RUN_DIR/ema-snapshots/ in `precision` (fp16 or fp32), atomically."""
    atomic_torch_save(profiles.snapshot(SNAPSHOT_DTYPES[precision]), RunLayout(run_dir).ema_snapshot(profiles.t))


def coefficients(stored_t, stored_gamma, target_t, target_gamma) -> np.ndarray:
    """(n_stored, n_targets) least-squares weights x of the stored profiles (t_i, gamma_i) that come closest in
    L2 to each target profile: the solution of A x = b with the closed-form inner products (lstsq: A is
    ill-conditioned when profiles are many)."""
    st, sg = np.asarray(stored_t, dtype=np.float64), np.asarray(stored_gamma, dtype=np.float64)
    tt, tg = np.asarray(target_t, dtype=np.float64), np.asarray(target_gamma, dtype=np.float64)
    gram = profile_inner_product(st[:, None], sg[:, None], st[None, :], sg[None, :])  # (n, n)
    rhs = profile_inner_product(st[:, None], sg[:, None], tt[None, :], tg[None, :])  # (n, k)
    return np.linalg.lstsq(gram, rhs, rcond=None)[0]


def run_config(run_dir) -> dict:
    """The run's config.json (training options under "train"); one line when the folder is not a run."""
    path = RunLayout(run_dir).config
    if not path.is_file():
        raise ValueError(f"{run_dir} is not a run directory (no {path.name}); give the --run-dir of `scaling train`")
    return json.loads(path.read_text())


def snapshots_up_to(run_dir, step: int | None) -> tuple[int, list]:
    """(step, [(snapshot step, path)...]) of the snapshots a reconstruction at `step` (default: the last
    snapshot's) reads; ValueError for a run without snapshots, a step without one, or too few before it."""
    layout = RunLayout(run_dir)
    found = layout.ema_snapshots()
    if not found:
        raise ValueError(f"{run_dir} holds no EMA snapshots ({layout.ema_snapshots_dir.name}/ is empty or "
                         f"missing); train it with ema_sigma_rels set (the default 0.05, 0.10) to reconstruct EMAs "
                         f"after training")
    steps = [s for s, _ in found]
    step = steps[-1] if step is None else step
    if step not in steps:
        raise ValueError(f"{run_dir} has no EMA snapshot at step {step}; choose --step among {short_list(steps)}")
    used = [(s, p) for s, p in found if s <= step]
    if len(used) < MIN_SNAPSHOTS:
        raise ValueError(f"step {step} has {len(used)} EMA snapshot(s) at or before it and a reconstruction needs at "
                         f"least {MIN_SNAPSHOTS}; choose a later --step among {short_list(steps)}")
    return step, used


def short_list(steps: list[int]) -> str:
    return ", ".join(map(str, steps)) if len(steps) <= 8 else f"{', '.join(map(str, steps[:3]))}, ..., {steps[-1]}"


def read_snapshot(path, step: int, sigma_rels) -> dict:
    """A snapshot whose step and lengths are those expected; one ValueError line for a damaged one."""
    fix = "delete it (the reconstruction then uses the other snapshots) or restore it"
    snap = load_tensors(path, what="EMA snapshot", expected="a snapshot that `scaling train` wrote; " + fix)
    problem = snapshot_problem(snap, step, sigma_rels)
    if problem:
        raise ValueError(f"EMA snapshot {path} is damaged ({problem}); {fix}")
    return snap


def snapshot_problem(snap, step: int, sigma_rels) -> str | None:
    """What is wrong with a loaded snapshot (its keys, its step, its lengths), or None."""
    if not isinstance(snap, dict) or set(SNAPSHOT_KEYS) - set(snap):
        return "keys " + ", ".join(SNAPSHOT_KEYS) + " missing"
    if snap["step"] != step:
        return f"step {snap['step']}, not {step}"
    if [float(s) for s in snap["sigma_rels"]] != list(sigma_rels):
        return f"profiles of sigma_rel {snap['sigma_rels']}, not the run's {list(sigma_rels)}"
    return None


def accumulate(out: list[dict], profile: dict, weights, path):
    """out[k] += weights[k] * profile for every target k (float32), checking the profile's names and shapes."""
    for acc, w in zip(out, weights, strict=True):
        if acc.keys() != profile.keys() or any(acc[k].shape != v.shape for k, v in profile.items()):
            raise ValueError(f"EMA snapshot {path} is damaged (its tensors do not match the run's model); delete it "
                             f"(the reconstruction then uses the other snapshots) or restore it")
        for name, v in profile.items():
            acc[name].add_(v.float(), alpha=float(w))


def reconstruct(run_dir, sigma_rels, *, step: int | None = None, use_sigma_rels=None) -> tuple[int, list[dict]]:
    """(step, one float32 state dict per sigma_rel): the EMAs of those lengths at `step` (default: the last
    snapshot), from the run's snapshots up to it (`use_sigma_rels`: only the stored profiles of these lengths)."""
    for s in sigma_rels:
        check_sigma_rel(s)
    stored = tuple(float(s) for s in run_config(run_dir)["train"].get("ema_sigma_rels", ()))
    used = stored if use_sigma_rels is None else tuple(s for s in stored if s in set(use_sigma_rels))
    step, snapshots = snapshots_up_to(run_dir, step)
    index = [(t, i) for t, _ in snapshots for i, s in enumerate(stored) if s in used]  # (snapshot step, profile)
    x = coefficients([t for t, _ in index], [gamma_of(stored[i]) for _, i in index],
                     [step] * len(sigma_rels), [gamma_of(s) for s in sigma_rels])  # (len(index), len(sigma_rels))
    out, row = None, 0
    for t, path in snapshots:
        snap = read_snapshot(path, t, stored)
        if out is None:
            out = [{k: torch.zeros(v.shape) for k, v in snap["profiles"][0].items()} for _ in sigma_rels]
        for i, profile in enumerate(snap["profiles"]):
            if stored[i] in used:
                accumulate(out, profile, x[row], path)
                row += 1
    return step, out


def write_posthoc(run_dir, sigma_rels, *, step: int | None = None) -> list:
    """Reconstruct the EMAs of `sigma_rels` and write each as a checkpoint into RUN_DIR/posthoc-ema/
    (atomically, after every snapshot read back); returns their paths."""
    config = run_config(run_dir)
    step, states = reconstruct(run_dir, sigma_rels, step=step)
    layout, paths = RunLayout(run_dir), []
    for sigma_rel, state in zip(sigma_rels, states, strict=True):
        ckpt = {"model": state, "ema": state, "config": config, "step": step,
                "data": {"images_seen": step * config["train"]["batch_size"]},
                "posthoc_ema": {"sigma_rel": float(sigma_rel), "gamma": gamma_of(sigma_rel)}}
        atomic_torch_save(ckpt, layout.posthoc_checkpoint(step, sigma_rel))
        paths.append(layout.posthoc_checkpoint(step, sigma_rel))
    return paths
