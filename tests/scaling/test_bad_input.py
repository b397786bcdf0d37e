"""Bad input to every command: exit status 2, one line on stderr, no traceback, nothing created or replaced.

Each case is a command line (with {tmp}, {run}, {ckpt}, {grid}, {samples} and {ref} standing for the test's
folder and the shared fixtures) and, where the bad input is a file, the function that makes it in {tmp}.
Cases stay cheap: tiny models, at most a step or two, and every command runs in this process.
"""
import json
import zipfile

import numpy as np
import pytest
import torch

from scaling.cli import main

TINY_MODEL = ("--model", "DiT-custom/8", "--depth", "1", "--hidden-size", "32", "--num-heads", "2", "--resolution",
              "16", "--batch-size", "8", "--num-workers", "0", "--device", "cpu", "--no-progress")
TINY = (*TINY_MODEL, "--sample-steps", "2", "--sample-images", "4")
TRAIN = ("train", "--run-dir", "{tmp}/run", *TINY, "--steps", "1")
SAMPLE = ("sample", "--ckpt", "{ckpt}", "--out", "{tmp}/s.npz", "--num", "2", "--steps", "2", "--device", "cpu")
FID = ("fid", "--ckpt", "{ckpt}", "--ref", "{ref}", "--num", "2", "--steps", "2", "--features", "mnist",
       "--device", "cpu", "--no-progress", "--out-dir", "{tmp}/fid")
EVAL = ("eval", "--samples", "{samples}", "--ref", "{ref}", "--features", "mnist", "--device", "cpu",
        "--no-progress")
EXPORT = ("export", "--ckpt", "{ckpt}", "--format")
LR_FIND = ("lr-find", "--out", "{tmp}/lr", *TINY_MODEL, "--num-steps", "5")
BENCH = ("bench", "--model", "DiT-T/8", "--batch-size", "2", "--input-size", "16", "--in-channels", "1",
         "--num-classes", "10", "--train-steps", "1", "--warmup", "0", "--sample-images", "1", "--sample-steps", "1",
         "--device", "cpu")
REF_STATS = ("ref-stats", "--data", "mnist32", "--out", "{tmp}/ref.npz", "--features", "mnist", "--num-images", "8",
             "--device", "cpu", "--no-progress")
ENCODE = ("encode", "--data", "{tmp}/images", "--out", "{tmp}/latents", "--codec", "identity", "--device", "cpu",
          "--no-progress")
TINY_GRID = """\
name: tiny
models: {sizes: [T], patch_sizes: [8], blocks: [adaln-zero]}
data: {dataset: mnist32, codec: identity, resolution: 16, channels: 1, num_classes: 10}
train: {batch_size: 8, lr: 1.0e-3, steps: 2, ckpt_every: 1, device: cpu, num_workers: 0}
eval: {every: 2, features: mnist, num_samples: 4, sampler: ddim, sampling_steps: [2]}
executor: {kind: local, gpus_per_run: 0, cpu_workers: 1}
"""


# ---- makers of bad files, each in the test's own folder ------------------------------------------------
def text(name, content):
    """A maker writing `content` to {tmp}/name."""
    return lambda tmp, fx: (tmp / name).write_text(content)


def grid_file(*changes):
    """A maker writing the tiny grid to {tmp}/grid.yaml, with each (old, new) of `changes` replaced ({tmp} filled)."""
    def make(tmp, fx):
        spec = TINY_GRID
        for old, new in zip(changes[::2], changes[1::2], strict=True):
            assert old in spec
            spec = spec.replace(old, new.replace("{tmp}", str(tmp)))
        (tmp / "grid.yaml").write_text(spec)
    return make


def folder(name, *files):
    """A maker of the folder {tmp}/name holding the given (empty) files."""
    def make(tmp, fx):
        (tmp / name).mkdir()
        for file in files:
            (tmp / name / file).write_text("mine")
    return make


def saved(obj):
    """A maker of {tmp}/c.pt holding `obj` (torch.save)."""
    return lambda tmp, fx: torch.save(obj, tmp / "c.pt")


def edited_checkpoint(edit):
    """A maker of {tmp}/c.pt: the shared tiny checkpoint, changed in place by `edit(ckpt)`."""
    def make(tmp, fx):
        ckpt = torch.load(fx["ckpt"], weights_only=True)
        edit(ckpt)
        torch.save(ckpt, tmp / "c.pt")
    return make


def nan_ema(ckpt):
    for tensor in ckpt["ema"].values():
        tensor.fill_(float("nan"))


def flip_a_bit(path):
    """Flip one bit inside the largest tensor of a torch zip file (torch does not check the zip's CRC)."""
    with zipfile.ZipFile(path) as archive:
        info = max(archive.infolist(), key=lambda i: i.file_size)
    data = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start + info.file_size // 2] ^= 0x40
    path.write_bytes(bytes(data))


def bit_flipped(tmp, fx):
    (tmp / "c.pt").write_bytes(fx["ckpt"].read_bytes())
    flip_a_bit(tmp / "c.pt")


def diffusers_folder(config):
    """A maker of the folder {tmp}/c holding a diffusers config.json and no usable weights."""
    def make(tmp, fx):
        (tmp / "c").mkdir()
        (tmp / "c" / "config.json").write_text(json.dumps(config))
    return make


def safetensors_with(metadata):
    def make(tmp, fx):
        from safetensors.torch import save_file

        save_file({"x": torch.zeros(2)}, str(tmp / "c.safetensors"), metadata=metadata)
    return make


def reference(**arrays):
    """A maker of {tmp}/r.npz: 4-dimensional statistics with `arrays` replacing some of them."""
    def make(tmp, fx):
        stats = {"mu": np.zeros(4), "sigma": np.eye(4), "mu_s": np.zeros(4), "sigma_s": np.eye(4), **arrays}
        np.savez(tmp / "r.npz", **stats)
    return make


def samples(array):
    return lambda tmp, fx: np.savez(tmp / "s.npz", arr_0=array)


def copied_run(edit):
    """A maker of {tmp}/run: a copy of the shared tiny run, then `edit(run_dir, fx)`."""
    def make(tmp, fx):
        import shutil

        shutil.copytree(fx["run"], tmp / "run")
        edit(tmp / "run", fx)
    return make


def foreign_checkpoint(run_dir, fx):
    """A later checkpoint, of another run (another seed), copied into run_dir."""
    ckpt = torch.load(fx["other"], weights_only=True)
    ckpt["step"] = 3
    torch.save(ckpt, run_dir / "checkpoints" / "step_0000003.pt")


def garbage_log(run_dir, fx):
    with open(run_dir / "train-log.jsonl", "ab") as f:
        f.write(b"\x80\x81\xfe\xff garbage\n")


def claimed_grid(tmp, fx):
    """{tmp}/grid: a tiny grid claimed by run-grid's first step."""
    from scaling.gridfile import parse_grid
    from scaling.runs import claim_grid_dir

    claim_grid_dir(tmp / "grid", parse_grid(TINY_GRID))


def case(*argv, make=None, expect=None, id=None):
    """One bad command line; its id is the command and what differs from the shared options (the last ones)."""
    return pytest.param(argv, make, expect, id=id or " ".join([argv[0], "...", *argv[-3:]] if len(argv) > 6 else argv))


FLOATS = ("nan", "inf", "-inf")
CASES = [
    # ---- models, gflops, bench: sizes ----
    *(case("models", "--input-size", v) for v in ("0", "-8", "nan", "1000000")),
    case("models", "--in-channels", "0"),
    case("models", "--num-classes", "-1"),
    case("models", "--patch-sizes", "0"),
    case("models", "--patch-sizes", "3", expect="does not divide"),
    case("models", "--format", "xml"),
    *(case("gflops", "DiT-S/2", "--input-size", v) for v in ("0", "-8", "100000")),
    case("gflops", "DiT-Q/2", expect="choose one of"),
    case("gflops", "DiT-S/3"),
    case("gflops", "DiT-S/2", "--block", "bogus"),
    case("gflops", "DiT-S/2", "--in-channels", "0"),
    case("gflops", "DiT-S/2", "--num-classes", "0"),
    case("gflops", "DiT-S/2", "--input-size", "ten"),
    *(case(*BENCH, o, v) for o, v in (("--input-size", "0"), ("--input-size", "-8"), ("--train-steps", "0"),
                                      ("--batch-size", "0"), ("--sample-steps", "0"), ("--sample-images", "-1"),
                                      ("--warmup", "-1"), ("--cfg-scale", "nan"), ("--cfg-scale", "inf"),
                                      ("--in-channels", "0"), ("--input-size", "100000"), ("--model", "DiT-Q/2"))),
    # ---- train: options ----
    *(case(*TRAIN, "--sample-cfg-scale", v) for v in FLOATS),
    *(case(*TRAIN, o, v) for o in ("--lr", "--ema-decay", "--class-dropout-prob", "--weight-decay", "--max-grad-norm")
      for v in ("nan", "inf")),
    *(case(*TRAIN, o, v) for o, v in (("--steps", "0"), ("--steps", "-1"), ("--batch-size", "0"),
                                      ("--steps", "ten"), ("--resolution", "-16"), ("--resolution", "100000"),
                                      ("--model", "DiT-Q/2"), ("--block", "bogus"), ("--micro-batch-size", "3"),
                                      ("--diffusion-steps", "0"), ("--log-every", "0"), ("--keep-last", "0"))),
    case(*TRAIN, "--data", "{tmp}/no-such-folder"),
    case(*TRAIN, "--data", "{tmp}/empty", make=folder("empty")),
    case(*TRAIN, "--config", "{tmp}/none.yaml"),
    case(*TRAIN, "--config", "{tmp}/cfg", make=folder("cfg")),
    # ---- train: config files of the wrong types, read like a grid file ----
    *(case(*TRAIN, "--config", "{tmp}/c.yaml", make=text("c.yaml", body), expect="c.yaml line", id=f"config {body}")
      for body in ('steps: "ten"\n', "batch_size: [16]\n", 'resolution: "16"\n', "steps: null\n",
                   "steps: {a: 1}\n", "lr: .nan\n", "sample_cfg_scale: .inf\n", "bogus: 1\n", "lr: [1]\n",
                   "learn_sigma: 3\n", "train:\n  steps: ten\n")),
    *(case(*TRAIN, "--config", "{tmp}/c.json", make=text("c.json", body), id=f"config {body}")
      for body in ('{"train": 3}', '{"steps": "ten"}', '{"batch_size": [16]}', "[1, 2]", '{"steps": 1.5}',
                   '{"lr": NaN}', "{")),
    case(*TRAIN, "--config", "{tmp}/c.yaml", make=text("c.yaml", "!!python/object/apply:os.system [ls]\n")),
    # ---- train: run directories and checkpoints ----
    case(*TRAIN, "--init", "{tmp}/c.pt", make=saved({})),
    case(*TRAIN, "--init", "{tmp}/c.pt", make=saved([1, 2])),
    case(*TRAIN, "--init", "{tmp}/c.pt", make=saved(torch.zeros(3))),
    case(*TRAIN, "--init", "{tmp}/c.pt", make=edited_checkpoint(lambda c: c["config"]["model"].update(bogus=1))),
    case(*TRAIN, "--init", "{tmp}/c.pt", make=edited_checkpoint(nan_ema)),
    case(*TRAIN, "--init", "{tmp}/c.pt", make=bit_flipped),
    case(*TRAIN, "--init", "{tmp}/c", make=diffusers_folder({"_class_name": "DiTTransformer2DModel"})),
    case(*TRAIN, "--init", "{tmp}/c.safetensors", make=safetensors_with({"dit_scaling": "{}"})),
    case("train", "--run-dir", "{tmp}/run", *TINY, "--steps", "3", make=copied_run(foreign_checkpoint),
         expect="another run", id="train resumes a foreign checkpoint"),
    case("train", "--run-dir", "{tmp}/run", *TINY, "--steps", "3", make=copied_run(garbage_log),
         expect="train-log.jsonl", id="train with garbage in its log"),
    case("train", "--run-dir", "{tmp}/f", *TINY, "--steps", "1", make=text("f", "mine")),
    # ---- sample ----
    *(case(*SAMPLE, "--cfg-scale", v) for v in FLOATS),
    *(case(*SAMPLE, o, v) for o, v in (("--eta", "nan"), ("--num", "0"), ("--num", "-1"), ("--steps", "0"),
                                       ("--steps", "2000"), ("--guidance-channels", "99"), ("--guidance-channels", "0"),
                                       ("--labels", "99"), ("--labels", "-1"), ("--sampler", "bogus"),
                                       ("--batch-size", "-1"), ("--precision", "fp8"), ("--model", "DiT-B/4"))),
    case("sample", "--ckpt", "{tmp}/c.pt", "--out", "{tmp}/s.npz", "--device", "cpu", make=saved({})),
    case("sample", "--ckpt", "{tmp}/c.pt", "--out", "{tmp}/s.npz", "--device", "cpu", make=saved([1])),
    case("sample", "--ckpt", "{tmp}/c.pt", "--out", "{tmp}/s.npz", "--device", "cpu", make=saved(torch.ones(2))),
    case("sample", "--ckpt", "{tmp}/c.pt", "--out", "{tmp}/s.npz", "--device", "cpu", make=saved({"model": 1})),
    case("sample", "--ckpt", "{tmp}/c.pt", "--out", "{tmp}/s.npz", "--device", "cpu",
         make=lambda tmp, fx: (tmp / "c.pt").write_bytes(bytes((i * 37 + 11) % 256 for i in range(300))),
         expect="not a torch file", id="sample random bytes as a checkpoint"),
    case("sample", "--ckpt", "{tmp}/c.pt", "--out", "{tmp}/s.npz", "--device", "cpu",
         make=saved({"x_embedder.proj.weight": torch.zeros(8, 1, 4, 4), "pos_embed": torch.zeros(1, 16, 8)}),
         id="sample weights with a DiT's first keys only"),
    case("sample", "--ckpt", "{tmp}/c.pt", "--out", "{tmp}/s.npz", "--device", "cpu",
         make=edited_checkpoint(lambda c: c["ema"].update(extra=torch.zeros(1)))),
    case("sample", "--ckpt", "{tmp}/c.pt", "--out", "{tmp}/s.npz", "--device", "cpu",
         make=edited_checkpoint(lambda c: c["ema"].update({"pos_embed": "text"}))),
    case("sample", "--ckpt", "{tmp}/c.pt", "--out", "{tmp}/s.npz", "--device", "cpu",
         make=edited_checkpoint(lambda c: c["config"]["model"].update(bogus=1))),
    case("sample", "--ckpt", "{tmp}/c.pt", "--out", "{tmp}/s.npz", "--device", "cpu",
         make=edited_checkpoint(lambda c: c["config"].update(model=["DiT-T/8"]))),
    case("sample", "--ckpt", "{tmp}/c.pt", "--out", "{tmp}/s.npz", "--device", "cpu",
         make=edited_checkpoint(lambda c: c.update(config="DiT-T/8"))),
    case("sample", "--ckpt", "{tmp}/c.pt", "--out", "{tmp}/s.npz", "--num", "2", "--steps", "2", "--device", "cpu",
         make=edited_checkpoint(nan_ema), expect="NaN"),
    case("sample", "--ckpt", "{tmp}/c.pt", "--out", "{tmp}/s.npz", "--num", "2", "--steps", "2", "--device", "cpu",
         make=bit_flipped, expect="checksum"),
    case("sample", "--ckpt", "{tmp}/c", "--out", "{tmp}/s.npz", "--device", "cpu",
         make=diffusers_folder({"_class_name": "DiTTransformer2DModel"})),
    case("sample", "--ckpt", "{tmp}/c", "--out", "{tmp}/s.npz", "--device", "cpu", make=diffusers_folder([1, 2])),
    case(*SAMPLE, make=text("s.npz", "mine"), expect="--force", id="sample over an existing file of the user's"),
    case("sample", "--ckpt", "{tmp}/c.safetensors", "--out", "{tmp}/s.npz", "--device", "cpu",
         make=safetensors_with({"dit_scaling": "{}"})),
    case("sample", "--ckpt", "{tmp}/c.safetensors", "--out", "{tmp}/s.npz", "--device", "cpu",
         make=safetensors_with({"dit_scaling": "[1"})),
    case("sample", "--ckpt", "{ckpt}", "--out", "{tmp}/o.npz", "--num", "2", "--steps", "2", "--device", "cpu",
         make=folder("o.npz")),
    case("sample", "--ckpt", "{ckpt}", "--out", "{tmp}/f/s.npz", "--num", "2", "--steps", "2", "--device", "cpu",
         make=text("f", "mine")),
    # ---- fid, eval: references and samples ----
    case(*FID, "--cfg-scale", "nan"),
    case(*FID, "--num", "0"),
    case(*FID, "--batch-size", "0"),
    case("fid", "--ckpt", "{tmp}/c.pt", "--ref", "{ref}", "--num", "2", "--steps", "2", "--features", "mnist",
         "--device", "cpu", "--no-progress", "--out-dir", "{tmp}/fid", make=edited_checkpoint(nan_ema)),
    case("fid", "--ckpt", "{tmp}/c.pt", "--ref", "{ref}", "--device", "cpu", make=saved({})),
    *(case("eval", "--samples", "{samples}", "--ref", "{tmp}/r.npz", "--features", "mnist", "--device", "cpu",
           "--no-progress", make=maker, id=f"eval --ref {name}")
      for name, maker in (("nan mu", reference(mu=np.full(4, np.nan))), ("inf sigma", reference(sigma=np.full((4, 4),
                          np.inf))), ("nan sigma_s", reference(sigma_s=np.full((4, 4), np.nan))),
                          ("2-d mu", reference(mu=np.zeros((4, 4)))), ("object mu", reference(mu=np.array([{}]))),
                          ("text", text("r.npz", "mu,sigma\n")), ("missing", None),
                          ("only mu", lambda tmp, fx: np.savez(tmp / "r.npz", mu=np.zeros(4))))),
    *(case("eval", "--samples", "{tmp}/s.npz", "--ref", "{ref}", "--features", "mnist", "--device", "cpu",
           "--no-progress", make=maker, id=f"eval --samples {name}")
      for name, maker in (("float", samples(np.zeros((4, 32, 32, 1), np.float32))),
                          ("3-d", samples(np.zeros((4, 32, 32), np.uint8))), ("empty", samples(np.zeros((0, 32, 32, 1),
                          np.uint8))), ("objects", samples(np.array([{}, {}], dtype=object))),
                          ("text", text("s.npz", "not an npz")), ("folder", folder("s.npz")), ("missing", None))),
    case(*EVAL, "--batch-size", "0"),
    case(*EVAL, "--metrics", "fid,bogus"),
    case(*EVAL, "--json", "{tmp}/j", make=folder("j")),
    case(*EVAL, "--json", "{tmp}/j.json", make=text("j.json", "mine"), expect="--force",
         id="eval --json over a user's file"),
    case(*BENCH, "--json", "{tmp}/b.json", make=text("b.json", "mine"), expect="--force",
         id="bench --json over a user's file"),
    case(*EVAL, "--json", "{tmp}/f/m.json", make=text("f", "mine")),
    # ---- ref-stats, encode ----
    *(case(*REF_STATS, o, v) for o, v in (("--resolution", "0"), ("--resolution", "-1"), ("--num-images", "0"),
                                          ("--batch-size", "0"), ("--resolution", "100000"), ("--seed", "-1"))),
    case("ref-stats", "--data", "{tmp}/none", "--out", "{tmp}/ref.npz", "--features", "mnist", "--device", "cpu"),
    case(*REF_STATS, make=text("ref.npz", "mine"), expect="--force", id="ref-stats over a user's file"),
    case(*REF_STATS[:3], "{tmp}/o", *REF_STATS[4:], make=folder("o")),
    *(case(*ENCODE, o, v, make=folder("images")) for o, v in (("--resolution", "0"), ("--resolution", "-1"),
                                                              ("--batch-size", "0"), ("--num-workers", "-1"))),
    case(*ENCODE, make=None, id="encode a missing image folder"),
    case(*ENCODE, make=folder("images", "a.txt"), id="encode a folder without images"),
    case(*ENCODE, make=lambda tmp, fx: (folder("images")(tmp, fx), folder("latents", "mine.txt")(tmp, fx)),
         id="encode into an existing folder"),
    # ---- export: never replaces what it did not write ----
    case(*EXPORT, "diffusers", "--out", "{tmp}/mine", make=folder("mine", "notes.txt"), expect="--force"),
    case(*EXPORT, "diffusers", "--out", "{tmp}/mine.txt", make=text("mine.txt", "mine"), expect="--force"),
    case(*EXPORT, "safetensors", "--out", "{tmp}/w.safetensors", make=text("w.safetensors", "mine"), expect="--force"),
    case(*EXPORT, "safetensors", "--out", "{tmp}/d", make=folder("d", "notes.txt")),
    case(*EXPORT, "safetensors", "--out", "{tmp}/f/w.safetensors", make=text("f", "mine")),
    case(*EXPORT, "safetensors", "--out", "{tmp}/w.safetensors", "--model", "DiT-XL/2"),
    case(*EXPORT, "safetensors", "--out", "{tmp}/w.safetensors", "--vae", "x"),
    *(case("export", "--ckpt", "{tmp}/c.pt", "--format", "safetensors", "--out", "{tmp}/w.safetensors", make=maker,
           id=f"export a checkpoint {name}")
      for name, maker in (("{}", saved({})), ("list", saved([1])), ("tensor", saved(torch.zeros(1))),
                          ("bogus key", edited_checkpoint(lambda c: c["config"]["model"].update(bogus=1))),
                          ("nan", edited_checkpoint(nan_ema)), ("bit flip", bit_flipped),
                          ("without config", edited_checkpoint(lambda c: c.pop("config"))))),
    case("export", "--ckpt", "{tmp}/c", "--format", "safetensors", "--out", "{tmp}/w.safetensors",
         make=diffusers_folder({"_class_name": "DiTTransformer2DModel", "num_layers": 1})),
    case("export", "--ckpt", "{tmp}/c.safetensors", "--format", "diffusers", "--out", "{tmp}/x",
         make=safetensors_with({"dit_scaling": '{"model": {}}'})),
    case(*EXPORT, "pickle", "--out", "{tmp}/w"),
    # ---- lr-find ----
    *(case(*LR_FIND, o, v) for o, v in (("--max-lr", "inf"), ("--max-lr", "nan"), ("--min-lr", "nan"),
                                        ("--min-lr", "0"), ("--min-lr", "-1"), ("--min-lr", "2"),
                                        ("--num-steps", "0"), ("--num-steps", "1"))),
    case("lr-find", "--out", "{tmp}/f", *TINY_MODEL, "--num-steps", "5", make=text("f", "mine")),
    # ---- plan, run-grid: grid files ----
    case("plan", "{tmp}/grid.yaml", make=grid_file("cpu_workers: 1", "cpu_workers: 1, bogus: 2"), expect="line 6"),
    case("plan", "{tmp}/grid.yaml", make=grid_file("lr: 1.0e-3", "lr: ten"), expect="line 4"),
    case("plan", "{tmp}/grid.yaml", make=grid_file("lr: 1.0e-3", "lr: 1.0e-3, sample_cfg_scale: .inf"),
         expect="line 4"),
    case("plan", "{tmp}/grid.yaml", make=grid_file("lr: 1.0e-3", "lr: .nan"), expect="line 4"),
    case("plan", "{tmp}/grid.yaml", make=grid_file("steps: 2", "steps: 0")),
    case("plan", "{tmp}/grid.yaml", make=grid_file("batch_size: 8", "batch_size: 100000000", "gpus_per_run: 0",
                                                    "gpus_per_run: 1"), expect="batch",
         id="plan a grid whose batch cannot fit"),
    case("plan", "{tmp}/grid.yaml", make=grid_file("resolution: 16", "resolution: 0")),
    case("plan", "{tmp}/grid.yaml", make=grid_file("sampling_steps: [2]", "sampling_steps: [2], cfg_scales: [.inf]")),
    case("plan", "{tmp}/grid.yaml", make=text("grid.yaml", "")),
    case("plan", "{tmp}/grid.yaml", make=text("grid.yaml", "- 1\n- 2\n")),
    case("plan", "{tmp}/none.yaml"),
    case("plan", "{tmp}/d", make=folder("d")),
    case("plan", "--preset", "nope"),
    *(case("plan", "--preset", "demo", o, v) for o, v in (("--gpus", "0"), ("--gpus", "-1"),
                                                          ("--gpu-hour-price", "nan"), ("--gpu-hour-price", "-1"),
                                                          ("--gpu-hour-price", "inf"), ("--throughput", "{tmp}/none"))),
    case("plan", "--preset", "demo", "--throughput", "{tmp}/t.json", make=text("t.json", "{")),
    case("plan", "--preset", "demo", "--throughput", "{tmp}/t.json", make=text("t.json", "[1]")),
    case("run-grid", "--preset", "demo", "--out", "{tmp}/f", "--no-progress", make=text("f", "mine")),
    case("run-grid", "--preset", "demo", "--out", "{tmp}/d", "--no-progress", make=folder("d", "notes.txt")),
    case("run-grid", "--preset", "nope", "--out", "{tmp}/g"),
    case("run-grid", "--preset", "demo", "--out", "{tmp}/g", "--cpu-workers", "0"),
    case("run-grid", "--preset", "demo", "--out", "{tmp}/g", "--cpu-workers", "-1"),
    case("run-grid", "--preset", "demo", "--out", "{tmp}/g", "--executor", "bogus"),
    case("run-grid", "{tmp}/grid.yaml", "--out", "{tmp}/g", make=grid_file("lr: 1.0e-3", "lr: inf")),
    case("run-grid", "{tmp}/grid.yaml", "--out", "{tmp}/g",
         make=grid_file("lr: 1.0e-3", "lr: 1.0e-3, sample_cfg_scale: .inf")),
    case("run-grid", "--out", "{tmp}/g"),
    case("run-one", "{grid}", "DiT-Q/2"),
    case("run-one", "{tmp}/none", "DiT-T/8"),
    # ---- status, results, report, fit: grid directories ----
    *(case(command, where, make=maker, id=f"{command} {name}")
      for command in ("status", "results", "report")
      for name, where, maker in (("on a file", "{tmp}/f", text("f", "mine")),
                                 ("on a folder without grid.yaml", "{tmp}/d", folder("d", "notes.txt")),
                                 ("on a missing folder", "{tmp}/none", None))),
    *(case("status", "{grid}", o, v) for o, v in (("--gpus", "0"), ("--gpu-hour-price", "nan"),
                                                  ("--gpu-hour-price", "-1"), ("--format", "xml"))),
    case("results", "{grid}", "--aggregate", "runs"),
    *(case("report", "{grid}", o, v) for o, v in (("--target", "nan"), ("--target", "inf"), ("--target", "-1"),
                                                  ("--metric", "bogus"), ("--step", "-1"), ("--format", "docx"))),
    case("report", "{grid}", "--out", "{tmp}/f", make=text("f", "mine")),
    case("fit", "{tmp}/t.csv", make=text("t.csv", "a,b\n1,2\n")),
    case("fit", "{tmp}/t.csv", make=text("t.csv", "train_compute_gflops,fid\nx,1\n2,y\n")),
    case("fit", "{tmp}/t.csv", make=text("t.csv", "")),
    case("fit", "{tmp}/none.csv"),
    case("fit", "--paper", "nope"),
    *(case("fit", "--paper", "fid_400k", o, v) for o, v in (("--confidence", "nan"), ("--confidence", "2"),
                                                            ("--holdout", "-1"), ("--holdout", "100"),
                                                            ("--x", "bogus"), ("--where", "size"),
                                                            ("--where", "bogus=1"), ("--confidence", "0"))),
]


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """A one-step tiny run with two checkpoints, a claimed tiny grid, samples and a reference (mnist features)."""
    root = tmp_path_factory.mktemp("shared")
    run_dir = root / "run"
    assert main(["train", "--run-dir", str(run_dir), "--steps", "2", "--ckpt-every", "1", *TINY]) == 0
    assert main(["train", "--run-dir", str(root / "other"), "--steps", "1", "--seed", "7", *TINY]) == 0
    claimed_grid(root, {})
    np.savez(root / "samples.npz", arr_0=np.zeros((4, 32, 32, 1), np.uint8))
    np.savez(root / "ref.npz", arr_0=np.zeros((4, 32, 32, 1), np.uint8))
    return {"run": run_dir, "ckpt": run_dir / "checkpoints" / "step_0000002.pt", "grid": root / "grid",
            "samples": root / "samples.npz", "ref": root / "ref.npz", "root": root,
            "other": root / "other" / "checkpoints" / "step_0000001.pt"}


def snapshot(*folders) -> dict:
    """Every path under `folders` with its size and modification time, but lock files (a refused command may
    have taken and released a lock: that is no change to what the user owns)."""
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for f in folders for p in sorted(f.rglob("*"))
            if p.suffix != ".lock"}


def run_cli(argv) -> int:
    """The CLI's exit status, also where it ends by SystemExit (argparse)."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


@pytest.mark.parametrize("argv, make, expect", CASES)
def test_bad_input_is_one_line_exit_2_and_touches_nothing(capsys, tmp_path, monkeypatch, shared, argv, make, expect):
    monkeypatch.delenv("SCALING_TRACEBACK", raising=False)
    if make is not None:
        make(tmp_path, shared)
    places = {"tmp": tmp_path, **shared}
    argv = [a.format(**places) for a in argv]
    before = snapshot(tmp_path, shared["root"])
    status = run_cli(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert status == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"scaling {argv[0]}: error: "), err
    assert expect is None or expect in lines[0], err
    assert snapshot(tmp_path, shared["root"]) == before, "a refused command created, changed or removed files"
