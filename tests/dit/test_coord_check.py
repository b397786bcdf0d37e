"""μP's coordinate check: flat in width under μP, growing under SP, and not flat when a μP rule is broken."""
import json

import pytest

import dit.parametrization
from dit.coord_check import CoordCheck, coord_check, spread
from dit.models import DiTConfig
from scaling.cli import main

CHECK = CoordCheck(widths=(32, 256), steps=4, batch_size=16)  # an 8x width range
FLAT = 1.5  # max / min of a layer's mean |activation| over the widths, at the last step


def test_mup_stays_flat_across_8x_widths_while_sp_grows():
    records = coord_check(CHECK)
    mup, sp = spread(records, "mup"), spread(records, "sp")
    assert set(mup) == {"patch embedding", "block 0 attention", "block 0 mlp", "block 1 attention", "block 1 mlp",
                        "final layer"}
    assert max(mup.values()) < FLAT, mup
    assert max(sp.values()) > 3, sp
    assert sp["final layer"] > 3 * mup["final layer"]


@pytest.mark.parametrize("broken", ["readout multiplier", "hidden learning rate"])
def test_a_wrong_mup_multiplier_shows_in_the_check(broken, monkeypatch):
    if broken == "readout multiplier":
        monkeypatch.setattr(DiTConfig, "readout_mult", property(lambda self: 1.0))
    else:
        monkeypatch.setattr(dit.parametrization, "width_mult", lambda width, base_width: 1.0)
    check = CoordCheck(widths=(32, 256), steps=4, batch_size=16, parametrizations=("mup",))
    assert max(spread(coord_check(check), "mup").values()) > FLAT


def test_command_writes_the_figure_and_records_and_refuses_bad_widths(tmp_path, capsys):
    out = tmp_path / "cc"
    assert main(["coord-check", "--out", str(out), "--widths", "32", "64", "--steps", "2", "--depth", "1"]) == 0
    printed = capsys.readouterr().out
    assert "  mup: patch embedding" in printed and (out / "coord-check.png").stat().st_size > 0
    assert {r["width"] for r in json.loads((out / "coord-check.json").read_text())} == {32, 64}
    assert main(["coord-check", "--out", str(tmp_path / "x"), "--widths", "30", "64"]) == 2
    assert "width 30 does not divide" in capsys.readouterr().err and not (tmp_path / "x").exists()
