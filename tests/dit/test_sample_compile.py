import pytest
import torch

from dit.models import create_dit
from dit.sample import SampleConfig, compile_forward


def test_compile_mode_is_validated_naming_the_choices():
    assert SampleConfig(num=1, compile=True, compile_mode="reduce-overhead").compile_mode == "reduce-overhead"
    with pytest.raises(ValueError, match="reduce-overhead"):
        SampleConfig(num=1, compile=True, compile_mode="cuda-graphs")


def test_cuda_graphs_fall_back_to_default_compilation_on_a_cpu(capsys):
    model = create_dit("DiT-custom/4", input_size=16, num_classes=3, depth=1, hidden_size=32, num_heads=2)
    plain = model.forward
    assert compile_forward(model, "reduce-overhead", torch.device("cpu")) == "default"
    assert model.forward is not plain and "CUDA graphs need a GPU" in capsys.readouterr().out
    with pytest.raises(ValueError, match="compile_mode"):
        compile_forward(model, "fastest", "cpu")
