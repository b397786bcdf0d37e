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
    assert main(["--version"]) == 0 and capsys.readouterr().out.strip() == f"scaling {package_version()}"
    with pytest.raises(SystemExit) as exit_:  # after another option, argparse answers it
        main(["--traceback", "--version"])
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


def test_version_answers_without_importing_torch():
    import subprocess
    import sys

    code = "import sys; from scaling.cli import main; main(['--version']); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "scaling" and out[-1] == "False"


def test_help_texts_say_each_default_once_and_list_choices():
    from scaling.cli import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices
    train = commands["train"].format_help()
    assert "(default: None)" not in train and train.count("(default: DiT-XL/2)") == 1
    assert "sdpa, math" in train and "linear, cosine" in train
    sample, lr_find = commands["sample"].format_help(), commands["lr-find"].format_help()
    assert "(default: 250)" in sample and "(default: 0.0)" in sample
    assert "--ckpt-every" not in lr_find and "--logger" not in lr_find


def test_results_describe_its_columns_in_the_parquet_file_and_on_request(tmp_path, capsys):
    import pyarrow.parquet as pq

    from scaling.commands.results import ADDED_COLUMNS
    from study.schema import schema
    from tests.reports.synthetic_grid import make_grid

    grid = make_grid(tmp_path / "grid", sizes=("S",), patches=(4, 2), steps=(1000, 2000), samples=False, logs=False)
    written = pq.read_schema(grid.path / "results.parquet")
    assert all(written.field(c).metadata[b"description"].decode() == schema()[c][1] for c in written.names)
    capsys.readouterr()
    assert main(["results", str(grid.path), "--describe", "--format", "json"]) == 0
    described = {row["column"]: row["meaning"] for row in json.loads(capsys.readouterr().out)}
    assert described == {c: schema()[c][1] for c in written.names} | {"failed": ADDED_COLUMNS["failed"][1]}


def test_the_results_table_view_keeps_every_metric_with_values_in_one_format_per_column(tmp_path, capsys):
    from study.schema import read_results
    from tests.reports.synthetic_grid import make_grid

    grid = make_grid(tmp_path / "grid", sizes=("S",), patches=(4, 2), steps=(1000, 2000), samples=False, logs=False)
    df = read_results(grid.path).assign(class_accuracy=0.5, val_loss=0.25, sfid=float("nan"))
    df["train_compute_gflops"] = [8716.0, 17432.0] * (len(df) // 2)
    write_results(df, grid.path)
    capsys.readouterr()
    assert main(["results", str(grid.path)]) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert "class_accuracy" in header and "val_loss" in header and "sfid" not in header.split()
    assert {"8.716e+03", "1.743e+04"} <= {cell for row in rows for cell in row.split()}


@pytest.mark.parametrize("gpu, flags, expect", [
    (True, [], dict(precision="bf16", attention="sdpa", compile=True, fused_ema=True)),
    (True, ["--reference"], dict(precision="fp32", attention="math", compile=False, fused_ema=False)),
    (True, ["--precision", "fp32"], dict(precision="fp32", attention="sdpa", compile=True)),
    (False, [], dict(precision="fp32", compile=False)),
])
def test_train_defaults_to_the_fast_path_on_a_gpu_and_the_reference_on_request(tmp_path, monkeypatch, gpu, flags,
                                                                                 expect):
    import dataclasses

    import torch

    from scaling.cli import build_parser
    from scaling.commands.train import resolve_config

    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
    config = resolve_config(build_parser().parse_args(["train", "--run-dir", str(tmp_path / "run"), *flags]))
    assert {k: v for k, v in dataclasses.asdict(config).items() if k in expect} == expect


def test_a_resumed_run_keeps_the_precision_it_started_with(tmp_path, monkeypatch):
    import torch

    from dit.config import TrainConfig
    from scaling.cli import build_parser
    from scaling.commands.train import resolve_config

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(json.dumps(TrainConfig(precision="fp32", compile=False).to_dict()))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    config = resolve_config(build_parser().parse_args(["train", "--run-dir", str(tmp_path / "run")]))
    assert config.precision == "fp32" and not config.compile
