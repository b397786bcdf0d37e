"""The SLURM executor without a cluster: resources and their overrides, the sbatch scripts, sbatch's refusals as one
line, how a job stops, options an executor does not take. tests/slurm runs grids against a real SLURM."""
import os
import signal
import time

import pytest

from dit.train import TrainingInterrupted
from scaling import slurm as slurm_module
from scaling.grid import plan
from scaling.gridfile import parse_grid
from scaling.run_state import run_state
from scaling.runs import claim_grid_dir
from scaling.slurm import SlurmJob, sbatch_error, signal_lead, slurm, write_sbatch_scripts
from study.schema import read_results
from study.typed import TypedFileError
from tests.scaling.test_runs import GRID, grid_file

GPU = ", slurm: {partition: gpu, account: lab, nodes: 2, gpus_per_node: 4, time: 60}"
CPU = (", slurm: {gpus_per_node: 0, cpus_per_task: 3, time: 30, "
       "overrides: [{models: [DiT-custom/4], cpus_per_task: 2, time: 90}]}")


def slurm_runs(tmp_path, slurm: str, name="tiny"):
    return plan(parse_grid(grid_file(tmp_path, name=name, kind="slurm", slurm=slurm).read_text()))


def test_slurm_dry_run_writes_one_sbatch_script_per_run(tmp_path):
    scripts = write_sbatch_scripts(slurm_runs(tmp_path, GPU), tmp_path / "out")
    assert [p.name for p in scripts] == ["DiT-custom-8-d1-w32-h2.sbatch", "DiT-custom-4-d1-w32-h2.sbatch"]
    text = scripts[0].read_text()
    for line in ("#SBATCH --partition=gpu", "#SBATCH --account=lab", "#SBATCH --nodes=2", "#SBATCH --gpus-per-node=4",
                 "#SBATCH --ntasks-per-node=4", "#SBATCH --time=60", "#SBATCH --signal=USR2@60", "#SBATCH --requeue",
                 "export OMP_NUM_THREADS=$SLURM_CPUS_PER_TASK"):
        assert line in text
    assert "scaling.cli run-one" in text and "DiT-custom/8-d1-w32-h2" in text
    assert text.count("srun ") == 1


def test_a_cpu_only_cluster_asks_for_cpus_and_no_gpu_and_overrides_apply_per_model(tmp_path):
    small, big = write_sbatch_scripts(slurm_runs(tmp_path, CPU), tmp_path / "out")
    for text, cpus, minutes in ((small.read_text(), 3, 30), (big.read_text(), 2, 90)):
        assert "--gpus-per-node" not in text
        assert f"#SBATCH --cpus-per-task={cpus}" in text and f"#SBATCH --time={minutes}" in text
        assert "#SBATCH --ntasks-per-node=1" in text


def test_resources_check_their_values_and_overrides_name_sizes_or_models(tmp_path):
    runs = slurm_runs(tmp_path, ", slurm: {gpus_per_node: 1, overrides: [{models: [custom], gpus_per_node: 8}]}")
    assert [r.executor.slurm.resources(r.model).gpus_per_node for r in runs] == [8, 8]
    with pytest.raises(TypedFileError, match="gpus_per_node -1 must be 0"):
        slurm_runs(tmp_path, ", slurm: {gpus_per_node: -1}")
    with pytest.raises(TypedFileError, match="'DiT-Q/3' is neither a size"):
        slurm_runs(tmp_path, ", slurm: {overrides: [{models: [DiT-Q/3], time: 5}]}")
    with pytest.raises(TypedFileError, match="models DiT-custom/4: .*cpus_per_task 0 must be at least 1"):
        slurm_runs(tmp_path, ", slurm: {overrides: [{models: [DiT-custom/4], cpus_per_task: 0}]}")
    with pytest.raises(TypedFileError, match="signal_lead 120 s must be positive and shorter than time"):
        slurm_runs(tmp_path, ", slurm: {time: 2, signal_lead: 120}")


def test_the_warning_comes_early_enough_to_checkpoint_the_run(tmp_path):
    from scaling.grid import SlurmResources

    tiny = slurm_runs(tmp_path, GPU)[0]
    xl = plan(parse_grid(grid_file(tmp_path, kind="slurm", slurm=GPU).read_text().replace(
        "{name: DiT-custom/8, depth: 1, hidden_size: 32, num_heads: 2}", "{name: DiT-XL/2}")))[0]
    hours = SlurmResources(time=600)
    assert signal_lead(tiny, hours) == slurm_module.SIGNAL_MARGIN_S
    assert signal_lead(xl, hours) > 100  # 675M parameters x 4 copies in fp32 at 200 MB/s, and the margin
    assert signal_lead(xl, SlurmResources(time=600, signal_lead=300)) == 300
    with pytest.raises(ValueError, match="time 1 min leaves no room for the 114 s"):
        signal_lead(xl, SlurmResources(time=1))


@pytest.mark.parametrize("said, fix", [
    ("sbatch: error: invalid partition specified: nope\nsbatch: error: Batch job submission failed: Invalid "
     "partition name specified", "`sinfo -s` lists them"),
    ("sbatch: error: Batch job submission failed: Invalid account or account/partition combination specified",
     "sacctmgr show assoc"),
    ("sbatch: error: Invalid generic resource (gres) specification", "gpus_per_node: 0"),
    ("sbatch: error: Batch job submission failed: Requested node configuration is not available", "lower"),
    ("sbatch: error: something new", "check executor.slurm in the grid file"),
])
def test_sbatch_refusals_are_one_line_with_the_fix(said, fix):
    message = str(sbatch_error(f"Command failed\n{said}\n"))
    assert "\n" not in message and message.startswith("sbatch refused the job: ") and fix in message
    assert said.splitlines()[-1].split("error: ", 1)[1].removeprefix("Batch job submission failed: ") in message


def test_a_job_leaves_sigterm_to_slurm_and_requeues_itself_on_the_warning_signal(tmp_path, monkeypatch):
    import torch

    run = slurm_runs(tmp_path, GPU)[0]
    requeued = []
    monkeypatch.setenv("_TEST_CLUSTER_", "local")  # submitit's job environment, outside a job
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", str(torch.get_num_threads()))  # the job sets this process's threads
    monkeypatch.setattr(slurm_module, "requeue_through_submitit", lambda: requeued.append(True))
    for signum in (signal.SIGTERM, signal.SIGUSR2):
        def stopped(*args, signum=signum, **kwargs):
            raise TrainingInterrupted(signum, 3, tmp_path)

        monkeypatch.setattr(slurm_module, "execute_run", stopped)
        expected = SystemExit if signum == signal.SIGTERM else TrainingInterrupted
        with pytest.raises(expected):
            SlurmJob(run, tmp_path)()
    assert requeued == [True]  # once: for USR2, not for the SIGTERM of SLURM's own requeue or cancel


def test_a_job_uses_the_cpus_slurm_gave_it(monkeypatch):
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "3")
    assert slurm_module.job_threads() == 3
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    monkeypatch.setattr(slurm_module, "usable_cores", lambda: 5)
    assert slurm_module.job_threads() == 5


def test_submitits_local_executor_runs_a_real_tiny_run(tmp_path):
    spec = parse_grid(grid_file(tmp_path, name="sub", steps=4, every=4, kind="slurm", slurm=GPU).read_text())
    runs = plan(spec)[:1]
    claim_grid_dir(tmp_path / "out", spec)
    slurm(runs, tmp_path / "out", cluster="local", progress=False)  # submitit's local executor, said explicitly
    assert run_state(tmp_path / "out", runs[0]).state == "done"
    assert len(read_results(tmp_path / "out")) == 1


def test_no_sbatch_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    spec = parse_grid(grid_file(tmp_path, kind="slurm", slurm=GPU).read_text())
    claim_grid_dir(tmp_path / "out", spec)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(slurm_module.SlurmError, match="sbatch is not installed here"):
        slurm(plan(spec), tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "slurm").exists()


def test_executors_refuse_options_they_do_not_take(tmp_path, capsys):
    from scaling.cli import main
    from scaling.executors import run_with

    with pytest.raises(ValueError, match="the local executor takes no option 'detach' .*it takes: progress, on_done"):
        run_with("local", [], tmp_path, detach=True)
    path = tmp_path / "g.yaml"
    path.write_text(GRID.format(name="g", steps=4, every=4, kind="local", slurm="", workers=1))
    assert main(["run-grid", str(path), "--out", str(tmp_path / "out"), "--detach"]) == 2
    err = capsys.readouterr().err
    assert err == ("scaling run-grid: error: the local executor takes no option 'detach' (it takes: progress, "
                   "on_done, on_results); drop it or choose another executor\n")
    assert not (tmp_path / "out" / "grid.yaml").exists()  # refused before anything was written



def test_the_report_is_rendered_when_the_last_run_of_a_detached_grid_finishes(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from scaling.commands.report import refresh_report_while_training

    spec = parse_grid(grid_file(tmp_path, kind="slurm", slurm=GPU).read_text())
    claim_grid_dir(tmp_path / "out", spec)
    html = tmp_path / "out" / "report" / "report.html"
    html.parent.mkdir(parents=True)
    html.write_text("rendered just now")
    rendered = []
    monkeypatch.setattr("reports.render.render_report", lambda grid_dir, formats: rendered.append((grid_dir, formats)))
    refresh_report_while_training(tmp_path / "out")
    assert rendered == []  # runs still to finish: at most every REPORT_INTERVAL
    os.utime(html, (time.time() - 301, time.time() - 301))
    refresh_report_while_training(tmp_path / "out")
    assert rendered == [(tmp_path / "out", ("html",))]  # while runs go on: the HTML, the PDF waits
    monkeypatch.setattr("scaling.run_state.run_state", lambda grid_dir, run: SimpleNamespace(state="done"))
    refresh_report_while_training(tmp_path / "out", final=False)  # run-grid's workers: run-grid renders it next
    assert len(rendered) == 1
    refresh_report_while_training(tmp_path / "out")
    assert rendered[-1] == (tmp_path / "out", ("html", "pdf"))


def test_run_grids_workers_leave_the_final_report_to_run_grid_and_slurm_jobs_render_it(tmp_path):
    from scaling.launch import run_command

    spec = parse_grid(grid_file(tmp_path, kind="slurm", slurm=GPU).read_text())
    run = plan(spec)[0]
    assert run_command(tmp_path, run, 1)[-1] == run.key  # a SLURM job: the whole report when it is the last
    assert run_command(tmp_path, run, 1, final_report=False)[-1] == "--no-final-report"
    assert run_command(tmp_path, run, 1, report=False)[-1] == "--no-report"


def test_a_job_slurm_forgot_ended_as_its_last_slurmstepd_line_says(tmp_path):
    log = tmp_path / "log.err"
    assert slurm_module.ended_as(log) == "ended"
    requeued = "slurmstepd-vm: error: *** JOB 9 ON vm CANCELLED AT 2026-12-06T09:01:36 DUE TO JOB REQUEUE ***\n"
    log.write_text(requeued)
    assert slurm_module.ended_as(log) == "ended"  # requeued: how the next allocation ended is not known
    cancelled = "slurmstepd-vm: error: *** JOB 9 ON vm CANCELLED AT 2026-12-06T09:03:00 ***\n"
    log.write_text(requeued + "training...\n" + cancelled)
    assert slurm_module.ended_as(log) == "cancelled"
    log.write_text(requeued + "slurmstepd: error: *** JOB 9 ON vm CANCELLED AT 10:00 DUE TO TIME LIMIT ***")
    assert slurm_module.ended_as(log) == "timeout"
