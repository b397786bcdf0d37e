"""`scaling ref-stats`, `scaling eval` and `scaling fid` from the command line, bad input included."""
import json
import urllib.error

import numpy as np
import pytest
import torch

from eval.extract import extract_features
from eval.images import ArrayImages
from scaling.cli import main
from tests.eval.conftest import numpy_fid


@pytest.fixture(scope="module")
def mnist_ref(tmp_path_factory, user_cache):
    path = tmp_path_factory.mktemp("ref") / "mnist-ref.npz"
    assert main(["ref-stats", "--data", "mnist32", "--out", str(path), "--features", "mnist", "--no-progress"]) == 0
    return path


@pytest.fixture(scope="module")
def test_digits(tmp_path_factory, digits):
    """The 1,000 MNIST-32 test digits (never in the reference) as a samples file."""
    from dit.data import mnist32_split

    path = tmp_path_factory.mktemp("samples") / "samples.npz"
    images, labels = mnist32_split("test")
    np.savez(path, arr_0=images, arr_1=labels)
    return path


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_eval_prints_one_json_line_matching_numpy(capsys, mnist_ref, test_digits, mnist_extractor):
    code, out, _ = run_cli(capsys, "eval", "--samples", test_digits, "--ref", mnist_ref, "--features", "mnist",
                           "--json", "-", "--no-progress")
    assert code == 0 and len(out.strip().splitlines()) == 1
    result = json.loads(out)
    assert set(result) == {
        "fid",
        "sfid",
        "inception_score",
        "precision",
        "recall",
        "class_accuracy",
        "num_samples",
        "features",
    }
    from dit.data import mnist32_split

    images, labels = mnist32_split("test")
    logits = extract_features(ArrayImages(images), mnist_extractor, progress=False).logits.numpy()
    assert (
        result["class_accuracy"] == pytest.approx((logits.argmax(axis=1) == labels).mean())
        and result["class_accuracy"] > 0.9
    )

    pool = {
        split: extract_features(ArrayImages(mnist32_split(split)[0]), mnist_extractor, progress=False)
        .pool.double()
        .numpy()
        for split in ("train", "test")
    }
    assert result["fid"] == pytest.approx(numpy_fid(pool["test"], pool["train"]), rel=1e-4)
    assert result["fid"] < 10 and result["inception_score"] > 8 and result["precision"] > 0.8


def test_eval_writes_json_and_a_table(capsys, tmp_path, mnist_ref, test_digits):
    code, out, _ = run_cli(capsys, "eval", "--samples", test_digits, "--ref", mnist_ref, "--features", "mnist",
                           "--json", tmp_path / "m.json", "--no-progress")
    assert code == 0 and "sFID" in out and "Inception Score" in out and "Class accuracy" in out
    assert json.loads((tmp_path / "m.json").read_text())["features"] == "mnist"


def test_eval_prints_json_with_the_chosen_metrics(capsys, tmp_path, mnist_ref, test_digits):
    code, out, _ = run_cli(capsys, "eval", "--samples", test_digits, "--ref", mnist_ref, "--features", "mnist",
                           "--metrics", "fid,kid", "--format", "json", "--no-progress", "--json", tmp_path / "m.json")
    result = json.loads(out)
    assert code == 0 and set(result) == {"fid", "kid", "kid_std", "class_accuracy", "num_samples", "features"}
    assert result["kid"] > 0 and result["kid_std"] > 0 and result["class_accuracy"] > 0.9
    assert json.loads((tmp_path / "m.json").read_text())["kid"] == result["kid"]
    code, out, _ = run_cli(capsys, "eval", "--samples", test_digits, "--ref", mnist_ref, "--features", "mnist",
                           "--metrics", "kid", "--no-progress")
    assert code == 0 and "KID" in out and "+-" in out and "FID" not in out


def bad_samples(tmp_path):
    cases = {
        "no-arr0": ({"images": np.zeros((4, 32, 32, 1), np.uint8)}, "no 'arr_0' array"),
        "float": ({"arr_0": np.zeros((4, 32, 32, 1), np.float32)}, "dtype float32; expected uint8"),
        "nchw": ({"arr_0": np.zeros((4, 1, 32, 32), np.uint8)}, "looks like (N, C, H, W)"),
        "unit-range": ({"arr_0": np.ones((4, 32, 32, 1), np.uint8)}, "only holds values 0 and 1"),
        "size": (
            {"arr_0": np.full((4, 28, 28, 1), 7, np.uint8)},
            "samples are 28x28x1 but the reference images are 32x32x1",
        ),
    }
    for name, (arrays, _) in cases.items():
        np.savez(tmp_path / f"{name}.npz", **arrays)
    (tmp_path / "not-a-zip.npz").write_text("hello")
    return [(tmp_path / f"{name}.npz", match) for name, (_, match) in cases.items()] + [
        (tmp_path / "not-a-zip.npz", "not an .npz archive"), (tmp_path / "missing.npz", "does not exist")]


def test_bad_samples_end_in_one_line_and_exit_2(capsys, tmp_path, mnist_ref):
    for path, match in bad_samples(tmp_path):
        code, out, err = run_cli(
            capsys, "eval", "--samples", path, "--ref", mnist_ref, "--features", "mnist", "--no-progress"
        )
        assert code == 2, path
        assert err.startswith("scaling eval: error: ") and len(err.strip().splitlines()) == 1 and match in err, err


def test_reference_of_other_features_is_refused(capsys, tmp_path, mnist_ref, test_digits, inception_weights):
    code, _, err = run_cli(capsys, "eval", "--samples", test_digits, "--ref", mnist_ref, "--features", "inception",
                           "--inception-weights", inception_weights, "--no-progress")
    assert code == 2 and "made with --features mnist" in err


def test_missing_inception_weights_offline_say_where_to_put_them(capsys, monkeypatch, tmp_path, mnist_ref, test_digits):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with np.load(mnist_ref) as ref:  # a reference that records no features, as ADM's own files
        np.savez(tmp_path / "adm-like.npz", **{k: ref[k] for k in ref.files if k != "features"})
    code, _, err = run_cli(capsys, "eval", "--samples", test_digits, "--ref", tmp_path / "adm-like.npz",
                           "--no-progress")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "weights-inception-2015-12-05-6726825d.pth" in err and "--inception-weights" in err


def test_eval_uses_the_features_the_reference_records(capsys, monkeypatch, mnist_ref, test_digits):
    def offline(*args, **kwargs):
        raise AssertionError("no Inception weights are needed")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    code, out, _ = run_cli(capsys, "eval", "--samples", test_digits, "--ref", mnist_ref, "--json", "-",
                           "--no-progress")
    result = json.loads(out)
    assert code == 0 and result["features"] == "mnist" and result["class_accuracy"] > 0.9
    code, _, err = run_cli(capsys, "eval", "--samples", test_digits, "--ref", mnist_ref, "--features", "inception",
                           "--no-progress")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "made with --features mnist, not inception" in err


def test_too_few_samples_warn_or_refuse_with_strict(capsys, tmp_path, mnist_ref, digits):
    np.savez(tmp_path / "few.npz", arr_0=digits[0][:100])
    code, _, err = run_cli(
        capsys, "eval", "--samples", tmp_path / "few.npz", "--ref", mnist_ref, "--features", "mnist", "--no-progress"
    )
    assert code == 0 and "scaling eval: warning: only 100 samples" in err
    code, _, err = run_cli(capsys, "eval", "--samples", tmp_path / "few.npz", "--ref", mnist_ref, "--features", "mnist",
                           "--strict", "--no-progress")
    assert code == 2 and "only 100 samples" in err


def test_ref_stats_refuses_unknown_data(capsys, tmp_path):
    code, _, err = run_cli(
        capsys, "ref-stats", "--data", tmp_path / "nothing-here", "--out", tmp_path / "r.npz", "--features", "mnist"
    )
    assert code == 2 and "neither 'mnist32', an .npz file nor an image folder" in err


def test_ref_stats_from_an_image_folder(capsys, tmp_path, digits):
    from PIL import Image

    for i, image in enumerate(digits[0][:80]):
        folder = tmp_path / "data" / f"class{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.repeat(image, 3, axis=2)).resize((40, 48)).save(folder / f"{i}.png")
    code, out, _ = run_cli(capsys, "ref-stats", "--data", tmp_path / "data", "--out", tmp_path / "r.npz", "--features",
                           "mnist", "--resolution", 32, "--num-images", 20, "--no-progress")
    assert code == 0
    with np.load(tmp_path / "r.npz") as f:
        assert f["arr_0"].shape == (20, 32, 32, 3) and f["mu"].shape == (64,) and f["sigma_s"].shape == (512, 512)


def tiny_checkpoint(path):
    """A project checkpoint of an untrained pixel-space DiT for MNIST-32 (1 channel, 10 classes)."""
    import dataclasses

    from dit.models import create_dit

    model = create_dit(
        "DiT-custom/8", input_size=32, in_channels=1, num_classes=10, depth=1, hidden_size=32, num_heads=2
    )
    state = model.state_dict()
    config = {
        "train": {"codec": "identity", "data": "mnist32"},
        "model": dataclasses.asdict(model.config),
        "class_names": [str(d) for d in range(10)],
    }
    torch.save({"model": state, "ema": state, "config": config, "step": 0}, path)
    return path


def test_fid_samples_then_evaluates_next_to_the_checkpoint(capsys, tmp_path, mnist_ref):
    ckpt = tiny_checkpoint(tmp_path / "step_0000000.pt")
    argv = ["fid", "--ckpt", ckpt, "--ref", mnist_ref, "--num", 12, "--steps", 2,  # features: the reference's (mnist)
            "--sample-batch-size", 6, "--device", "cpu", "--no-progress"]
    code, out, err = run_cli(capsys, *argv)
    assert code == 0, err
    samples, metrics = (
        tmp_path / "step_0000000-ddpm-2-cfg1-n12-seed0.npz",
        tmp_path / "step_0000000-ddpm-2-cfg1-n12-seed0-mnist.json",
    )
    with np.load(samples) as f:
        assert f["arr_0"].shape == (12, 32, 32, 1) and f["arr_0"].dtype == np.uint8
    result = json.loads(metrics.read_text())
    assert (
        result["num_samples"] == 12 and result["sampling_steps"] == 2 and result["fid"] > 10
    )  # untrained: far from digits
    code, out, _ = run_cli(capsys, *argv)
    assert code == 0 and "exists" in out  # re-running reuses the finished evaluation


def test_fid_refuses_features_the_reference_was_not_made_with_before_sampling(capsys, tmp_path, mnist_ref):
    ckpt = tiny_checkpoint(tmp_path / "step_0000000.pt")
    code, _, err = run_cli(capsys, "fid", "--ckpt", ckpt, "--ref", mnist_ref, "--features", "inception", "--num", 4,
                           "--steps", 2, "--device", "cpu", "--no-progress")
    assert code == 2 and "made with --features mnist" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_0000000.pt"]  # nothing sampled
