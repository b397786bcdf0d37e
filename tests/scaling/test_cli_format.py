"""One CLI convention: --format json on every command that prints a table or a result parses as JSON on
stdout (notes on stderr), --version prints the package version, and an unknown metric is one line, exit 2."""
import json

import pytest

from scaling.cli import main, package_version
from scaling.grid import plan
from scaling.gridfile import parse_grid
from scaling.results import write_results
from scaling.runs import claim_grid_dir
from study.schema import result_row, to_table

GRID = """
name: formats
models: {sizes: [T], patch_sizes: [8, 4]}
data: {dataset: mnist32, codec: identity, resolution: 32, channels: 1, num_classes: 10}
train: {batch_size: 8, steps: 4, device: cpu}
eval: {every: 2, features: mnist, num_samples: 16, sampler: ddim, sampling_steps: [5], metrics: [fid, kid]}
"""


def json_out(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out), err


@pytest.fixture
def grid_dir(tmp_path):
    spec = parse_grid(GRID)
    claim_grid_dir(tmp_path / "grid", spec)
    runs = plan(spec)
    run = {
        "run": runs[0].name,
        "model": runs[0].model,
        "size": "T",
        "patch_size": 8,
        "block": "adaln-zero",
        "params": 10,
        "gflops": 0.5,
        "dataset": "mnist32",
        "resolution": 32,
        "batch_size": 8,
    }
    record = {
        "step": 4,
        "sampler": "ddim",
        "sampling_steps": 5,
        "cfg_scale": 1.0,
        "num_samples": 16,
        "features": "mnist",
        "fid": 12.5,
        "kid": 0.25,
    }  # sfid, precision, ... not chosen: NaN in the table
    write_results(to_table([result_row(run, record)]), tmp_path / "grid")
    return tmp_path / "grid"


def test_listing_commands_print_json_records(capsys, grid_dir):
    models, _ = json_out(capsys, "models", "--patch-sizes", "2", "--format", "json")
    xl2 = next(m for m in models if m["model"] == "DiT-XL/2")
    assert {k: v for k, v in xl2.items() if k != "params"} == {
        "model": "DiT-XL/2", "depth": 28, "width": 1152, "heads": 16, "tokens": 256}
    gflops, _ = json_out(capsys, "gflops", "DiT-S/8", "--format", "json")
    assert gflops[0]["model"] == "DiT-S/8" and gflops[0]["gflops"] > 0
    planned, _ = json_out(capsys, "plan", "--preset", "demo", "--format", "json")
    assert planned and all("train_compute_gflops" in row for row in planned)
    status, err = json_out(capsys, "status", grid_dir, "--format", "json")
    assert [s["run"] for s in status] == ["DiT-T/8", "DiT-T/4"] and status[0]["state"] == "pending"
    assert "of 2 runs" in err  # the summary line is a note, on stderr
    results, _ = json_out(capsys, "results", grid_dir, "--format", "json")
    assert results[0]["fid"] == 12.5 and results[0]["kid"] == 0.25 and results[0]["sfid"] is None  # NaN -> null


def test_csv_has_the_json_columns(capsys, grid_dir):
    assert main(["status", str(grid_dir), "--format", "csv"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert header == "run,state,step,steps,evaluated,points,latest_fid,seconds_left"


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"scaling {package_version()}"


@pytest.mark.parametrize("argv", [["eval", "--samples", "s.npz", "--ref", "r.npz", "--metrics", "fid,kdi"],
                                  ["fid", "--ckpt", "c.pt", "--ref", "r.npz", "--metrics", "kdi"]])
def test_an_unknown_metric_is_one_line_and_exit_2(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert (
        err.strip().count("\n") == 0 and "unknown metric 'kdi'; choose one of fid, sfid, is, pr, kid, fd-dinov2" in err
    )


def test_a_reader_that_closes_the_pipe_early_ends_the_command_quietly():
    """`scaling plan ... --format json | head -1`: the closed pipe is the reader's choice, not an error."""
    import os
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "scaling.cli", "plan", "--preset", "paper", "--format", "json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(os.environ, PYTHONWARNINGS="ignore"))
    proc.stdout.close()  # before the command writes: every write meets a pipe with no reader
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0 and err == "", err
