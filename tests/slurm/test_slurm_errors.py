"""SLURM's refusals and a job that fails at start: one line naming the cause and the fix, exit 2, and nothing left
in the grid directory that a re-run trips on."""
import pytest

from study.layout import GridLayout
from tests.slurm.tools import run_grid, scaling, write_grid

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("cluster")]


def error_lines(done) -> list[str]:
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    return done.stderr.strip().splitlines()


@pytest.mark.parametrize("asked, said, fix", [
    ("gpus_per_node: 1", "Invalid generic resource (gres) specification", "set executor.slurm.gpus_per_node: 0"),
    ("gpus_per_node: 0, partition: nope", "Invalid partition name specified", "`sinfo -s` lists them"),
])
def test_a_refused_submission_is_one_line_and_leaves_nothing(tmp_path, asked, said, fix):
    out, path = tmp_path / "grid", write_grid(tmp_path)
    path.write_text(path.read_text().replace("gpus_per_node: 0", asked))
    lines = error_lines(run_grid(path, out, timeout=120))
    assert len(lines) == 1 and lines[0].startswith(f"scaling run-grid: error: sbatch refused the job: {said}; ")
    assert fix in lines[0]
    assert list(GridLayout(out).slurm_dir.iterdir()) == []  # no script, pickle or job record


def test_jobs_that_fail_at_start_end_the_grid_in_one_line_and_a_rerun_submits_again(tmp_path):
    path = write_grid(tmp_path, steps=4, every=4)
    path.write_text(path.read_text().replace("dataset: mnist32", f"dataset: {tmp_path / 'no-such-data'}"))
    out = tmp_path / "grid"
    lines = error_lines(run_grid(path, out, timeout=180))
    assert lines[-1].startswith("scaling run-grid: error: runs failed: DiT-T/8 (failed (job ")
    assert "ValueError: data folder" in lines[-1] and "re-run to resume them" in lines[-1]
    assert scaling("status", out, timeout=60).stdout.count("failed (job ") == 2
    again = run_grid(path, out, timeout=180)
    assert "submitted 2 jobs" in again.stdout, again.stdout + again.stderr
