"""The demo preset end to end (about 10 minutes on 2 CPU cores): run with `python -m pytest -m slow`."""
import subprocess
import sys
import time

import pytest

from study.schema import read_results

BUDGET_SECONDS = 600


@pytest.mark.slow
def test_the_demo_study_finishes_in_its_budget_and_draws_the_asked_digits(tmp_path):
    start = time.time()
    proc = subprocess.run(
        [sys.executable, "-m", "scaling.cli", "run-grid", "--preset", "demo", "--out", str(tmp_path), "--no-progress"],
        capture_output=True,
        text=True,
    )
    elapsed = time.time() - start
    assert proc.returncode == 0, proc.stdout + proc.stderr
    df = read_results(tmp_path)
    assert sorted(df["run"].unique()) == sorted(["DiT-T/8", "DiT-T/4", "DiT-T/2", "DiT-M/8", "DiT-M/4", "DiT-M/2"])
    # runs x (evaluation points (250, 500) x guidance scales (1, 4) + the unguided 5 and 20 steps at 500
    # + the validation loss of five post-hoc EMA lengths at 500)
    assert len(df) == 6 * (2 * 2 + 2 + 5)
    lengths = df[df["ema_sigma_rel"].notna()]
    assert (lengths["step"] == 500).all() and (lengths.groupby("run").size() == 5).all()
    swept = df[(df["step"] == 500) & (df["cfg_scale"] == 1)]
    assert sorted(swept["sampling_steps"].unique()) == [5, 10, 20]
    assert df["val_loss"].notna().all() and (df["val_loss"] > df["val_mse"]).all()
    final = df[(df["step"] == 500) & (df["cfg_scale"] > 1)]
    best = final.loc[final["class_accuracy"].idxmax()]
    # the MNIST classifier (97% on held-out digits, trained apart from the generators) reads the samples
    assert best["class_accuracy"] >= 0.8, final[["run", "class_accuracy"]].to_string()
    for name in ("report.html", "report.pdf"):
        assert (tmp_path / "report" / name).stat().st_size > 10_000
    print(f"demo finished in {elapsed:.0f} s; best run {best['run']}: class accuracy {best['class_accuracy']:.3f}")
    assert elapsed < BUDGET_SECONDS, f"the demo took {elapsed:.0f} s, over its {BUDGET_SECONDS} s budget"
