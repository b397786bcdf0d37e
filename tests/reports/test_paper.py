"""The shipped DiT numbers: the right models, the values of the paper's tables, their sources named."""
import pytest

from reports.paper import paper_citation, paper_table

# Spot values as printed in the paper (arXiv:2212.09748v2), typed here a second time.
TABLE4_FID = {"DiT-S/8": 153.60, "DiT-B/4": 68.38, "DiT-L/2": 23.33, "DiT-XL/2": 19.47}
TABLE2_XL2_CFG150 = dict(fid=2.27, sfid=4.60, inception_score=278.24, precision=0.83, recall=0.57)
TABLE3_XL2_NO_GUIDANCE = dict(fid=12.03, sfid=7.12, inception_score=105.25, precision=0.75, recall=0.64)


def test_fid_400k_has_the_twelve_models_with_their_source():
    df = paper_table("fid_400k")
    assert sorted(df["model"]) == sorted(f"DiT-{s}/{p}" for s in ("S", "B", "L", "XL") for p in (2, 4, 8))
    assert "Table 4" in df.attrs["source"] and "400K" in df.attrs["source"]
    for model, fid in TABLE4_FID.items():
        assert df.set_index("model").loc[model, "fid"] == fid


def test_fid_400k_follows_the_papers_findings():
    df = paper_table("fid_400k").set_index("model")
    for size in ("S", "B", "L", "XL"):  # a smaller patch (more Gflops) always lowers FID
        fids = [df.loc[f"DiT-{size}/{p}", "fid"] for p in (8, 4, 2)]
        assert fids == sorted(fids, reverse=True)
        ratio = df.loc[f"DiT-{size}/2", "gflops"] / df.loc[f"DiT-{size}/8", "gflops"]
        assert 14 < ratio < 18  # 16x the tokens: about 16x the Gflops


def test_xl2_final_metrics_with_and_without_guidance():
    df = paper_table("xl2_final")
    assert "Table 2" in df.attrs["source"] and "Table 3" in df.attrs["source"]
    assert sorted(set(zip(df["resolution"], df["cfg_scale"], strict=True))) == [(256, 1.0), (256, 1.25), (256, 1.5),
                                                                    (512, 1.0), (512, 1.25), (512, 1.5)]
    guided = df[(df["resolution"] == 256) & (df["cfg_scale"] == 1.5)].iloc[0]
    assert {k: guided[k] for k in TABLE2_XL2_CFG150} == TABLE2_XL2_CFG150
    plain = df[(df["resolution"] == 512) & (df["cfg_scale"] == 1.0)].iloc[0]
    assert {k: plain[k] for k in TABLE3_XL2_NO_GUIDANCE} == TABLE3_XL2_NO_GUIDANCE


def test_citation_and_unknown_table():
    assert "2212.09748" in paper_citation()
    with pytest.raises(ValueError, match="choose one of fid_400k, blocks_400k, xl2_final"):
        paper_table("table9")
