import dataclasses
import json
import math

import pytest
import torch
from diffusers import DiTTransformer2DModel
from safetensors.torch import save_file

import dit.embeddings
from dit.checkpoint import load_model, read_checkpoint
from dit.export import export_diffusers, export_safetensors
from dit.init_from import initialise_from
from dit.models import create_dit
from scaling.cli import main

# diffusers runs the attention through the same SDPA kernel; outputs at t = 0 agree to float reordering.
T0_ATOL = 1e-6


def random_tiny_dit(block="adaln-zero", seed=0):
    """A tiny DiT with every weight random (the zero-initialised adaLN layers too, so outputs are not 0)."""
    torch.manual_seed(seed)
    model = create_dit("DiT-custom/4", input_size=16, in_channels=1, num_classes=10, depth=2, hidden_size=32,
                       num_heads=2, block=block)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name != "pos_embed":
                p.normal_(0, 0.1)
    return model.eval()


def save_run_checkpoint(model, path):
    """The model as this project's checkpoint (EMA = the model), with a pixel-space run config."""
    state = model.state_dict()
    config = {"model": dataclasses.asdict(model.config), "class_names": [str(i) for i in range(10)],
              "train": {"codec": "identity", "data": "mnist32", "vae": "none", "noise_schedule": "linear"}}
    torch.save({"model": state, "ema": state, "opt": {}, "config": config, "step": 0}, path)
    return path


def shifted_timestep_embedding(t, dim, max_period=10000.0):
    """diffusers' embedding written out: [cos, sin] at frequencies exp(-ln(max_period) k / (dim/2 - 1))."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / (half - 1))
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def inputs(n=6):
    gen = torch.Generator().manual_seed(1)
    return torch.randn(n, 1, 16, 16, generator=gen), torch.tensor([0, 3, 9, 10, 5, 1][:n])


@pytest.fixture
def exported(tmp_path):
    model = random_tiny_dit()
    ckpt = save_run_checkpoint(model, tmp_path / "step_0000000.pt")
    return model, ckpt, export_diffusers(ckpt, tmp_path / "diffusers")


def test_diffusers_gives_our_outputs_at_t0_and_differs_elsewhere_only_by_its_timestep_frequencies(
    exported, monkeypatch
):
    model, _, folder = exported
    theirs = DiTTransformer2DModel.from_pretrained(folder).eval()
    x, y = inputs()  # y = 10 is the null class
    with torch.no_grad():
        zero = torch.zeros(len(x), dtype=torch.long)
        torch.testing.assert_close(theirs(x, zero, class_labels=y).sample, model(x, zero, y), atol=T0_ATOL, rtol=0)
        deviations = {}
        for t in (1, 10, 100, 500, 999):
            ts = torch.full((len(x),), t)
            deviations[t] = (theirs(x, ts, class_labels=y).sample - model(x, ts, y)).abs().max().item()
        # Our model with diffusers' frequencies written out gives diffusers' outputs at every t.
        monkeypatch.setattr(dit.embeddings, "timestep_embedding", shifted_timestep_embedding)
        for t in deviations:
            ts = torch.full((len(x),), t)
            torch.testing.assert_close(theirs(x, ts, class_labels=y).sample, model(x, ts, y), atol=1e-5, rtol=1e-5)
    assert deviations[1] > 1e-5 and deviations[999] > 10 * deviations[1], deviations


def test_the_two_timestep_embeddings_agree_at_0_and_differ_by_up_to_1_9_at_999():
    t = torch.tensor([0, 999])
    diff = (dit.embeddings.timestep_embedding(t, 256) - shifted_timestep_embedding(t, 256)).abs()
    assert diff[0].max() == 0
    assert 1.8 < diff[1].max() < 2.0


def test_a_diffusers_folder_reads_back_exactly_and_samples(exported, tmp_path):
    model, _, folder = exported
    assert json.loads((folder / "config.json").read_text())["_class_name"] == "DiTTransformer2DModel"
    assert "downscale_freq_shift" in (folder / "README.md").read_text()
    back = load_model(read_checkpoint(folder))
    assert back.config == model.config
    ours, theirs = model.state_dict(), back.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert main(["sample", "--ckpt", str(folder), "--num", "3", "--steps", "2", "--out", str(tmp_path / "s.npz")]) == 0


def test_safetensors_round_trip_is_exact_and_keeps_the_run_config(exported, tmp_path):
    model, ckpt, _ = exported
    out = export_safetensors(ckpt, tmp_path / "w.safetensors")
    back_ckpt = read_checkpoint(out)
    assert back_ckpt["config"] == torch.load(ckpt, weights_only=True)["config"]
    back = load_model(back_ckpt)
    assert all(torch.equal(v, back.state_dict()[k]) for k, v in model.state_dict().items())


def test_other_blocks_go_to_safetensors_and_a_bare_state_dict_needs_a_model_name(tmp_path):
    model = random_tiny_dit(block="cross-attn")
    ckpt = save_run_checkpoint(model, tmp_path / "c.pt")
    back = load_model(read_checkpoint(export_safetensors(ckpt, tmp_path / "c.safetensors")))
    assert back.config.block == "cross-attn"
    assert all(torch.equal(v, back.state_dict()[k]) for k, v in model.state_dict().items())
    save_file(model.state_dict(), str(tmp_path / "bare.safetensors"))
    plain = read_checkpoint(tmp_path / "bare.safetensors", model_name="DiT-custom/4")
    assert plain.keys() == model.state_dict().keys()


def test_a_diffusers_pipeline_export_loads_in_diffusers_and_decodes_through_its_own_vae(tmp_path):
    from diffusers import AutoencoderKL, DiTPipeline

    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=1, block_out_channels=(8,), norm_num_groups=4,
                        down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",))
    vae.save_pretrained(tmp_path / "vae")
    ckpt = save_run_checkpoint(random_tiny_dit(), tmp_path / "m.pt")
    folder = export_diffusers(ckpt, tmp_path / "pipe", vae=str(tmp_path / "vae"))
    pipe = DiTPipeline.from_pretrained(folder)
    assert pipe.labels["7"] == 7 and pipe.scheduler.config.beta_schedule == "linear"
    meta = read_checkpoint(folder)["config"]
    assert meta["train"]["codec"] == "sd-vae" and meta["train"]["vae"] == str(folder / "vae")


def test_init_starts_model_and_ema_from_the_weights_and_refuses_another_shape(exported):
    model, _, folder = exported
    fresh, ema = create_dit("DiT-custom/4", input_size=16, in_channels=1, num_classes=10, depth=2, hidden_size=32,
                            num_heads=2), random_tiny_dit(seed=1)
    initialise_from(fresh, ema, folder)
    assert all(
        torch.equal(v, fresh.state_dict()[k]) and torch.equal(v, ema.state_dict()[k])
        for k, v in model.state_dict().items()
    )
    deeper = create_dit(
        "DiT-custom/4", input_size=16, in_channels=1, num_classes=10, depth=3, hidden_size=32, num_heads=2
    )
    with pytest.raises(ValueError, match="depth=2.*depth=3"):
        initialise_from(deeper, deeper, folder)


def one_error_line(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_bad_inputs_end_in_one_line_and_exit_2(tmp_path, capsys):
    ckpt = save_run_checkpoint(random_tiny_dit(block="in-context"), tmp_path / "ic.pt")
    err = one_error_line(capsys, ["export", "--ckpt", str(ckpt), "--format", "diffusers", "--out", str(tmp_path / "d")])
    assert "no class for the in-context block" in err and not (tmp_path / "d").exists()

    other = tmp_path / "unet"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel", "norm_type": None}))
    err = one_error_line(capsys, ["sample", "--ckpt", str(other), "--num", "1", "--out", str(tmp_path / "s.npz")])
    assert "UNet2DModel" in err and "not a DiT" in err

    save_file(random_tiny_dit().state_dict(), str(tmp_path / "bare.safetensors"))
    err = one_error_line(
        capsys, ["sample", "--ckpt", str(tmp_path / "bare.safetensors"), "--num", "1", "--out", str(tmp_path / "s.npz")]
    )
    assert "--model" in err
