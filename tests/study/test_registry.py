"""The one checked name lookup behind every registry: entries by name, and one line naming the choices."""
import pytest

from study.registry import Registry


def test_lookup_and_the_error_line_name_the_choices_in_order():
    samplers = Registry("sampler", {"ddpm": 1, "ddim": 2})
    assert samplers.get("ddim") == samplers["ddim"] == 2 and samplers.names() == ("ddpm", "ddim")
    assert "ddpm" in samplers and "ddmp" not in samplers and list(samplers) == ["ddpm", "ddim"] and len(samplers) == 2
    with pytest.raises(ValueError, match=r"^unknown sampler 'ddmp'; choose one of ddpm, ddim$"):
        samplers.get("ddmp")
    with pytest.raises(ValueError, match=r"^unknown lr_schedule 'x'; choose one of ddpm, ddim$"):
        samplers.check("x", what="lr_schedule")
    assert (
        str(samplers.error("Q", where=" in 'DiT-Q/2'")) == "unknown sampler 'Q' in 'DiT-Q/2'; choose one of ddpm, ddim"
    )


def test_plain_names_and_registration_by_decorator():
    attention = Registry("attention", ("sdpa", "math"))
    assert attention.check("math") == "math" and attention.get("sdpa") == "sdpa"
    extractors = Registry("feature extractor")

    @extractors.register("tiny")
    def tiny():
        return "built"

    assert extractors.get("tiny") is tiny and tiny() == "built"
    with pytest.raises(AssertionError, match="registered twice"):
        extractors.register("tiny", object())
