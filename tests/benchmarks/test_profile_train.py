import gzip
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import profile_train  # noqa: E402


@pytest.mark.parametrize("name, expected", [
    ("aten::mm", "matmul"),
    ("aten::addmm", "matmul"),
    ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x256x64", "matmul"),
    ("nvjet_tst_128x256_64x4_2x1_v_bz_coopA_NTN", "matmul"),
    ("void cudnn::cnn::conv2d_grouped_direct_kernel", "matmul"),
    ("pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits>", "attention"),
    ("aten::_scaled_dot_product_flash_attention_for_cpu", "attention"),
    ("triton_poi_fused_add_mul_native_layer_norm_0", "other"),
    ("aten::mul", "other"),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<float>>", "other"),
])
def test_kernels_are_sorted_into_matmul_attention_and_the_rest(name, expected):
    assert profile_train.category(name) == expected


def test_summary_ranks_kernels_and_splits_the_total_into_shares():
    times = {"aten::mm": 600.0, "aten::mul": 300.0, "flash_fwd": 100.0}  # microseconds over 2 steps
    summary = profile_train.summarise(times, steps=2, top=2)
    assert summary["ms_per_step"] == pytest.approx(0.5)
    assert summary["shares"] == pytest.approx({"matmul": 0.6, "other": 0.3, "attention": 0.1})
    assert summary["non_matmul_share"] == pytest.approx(0.4)
    assert [k["name"] for k in summary["top_kernels"]] == ["aten::mm", "aten::mul"]
    assert summary["top_kernels"][0]["ms_per_step"] == pytest.approx(0.3)


def test_a_tiny_cpu_profile_writes_a_trace_and_a_summary(tmp_path):
    trace, out = tmp_path / "trace.json.gz", tmp_path / "profile.json"
    profile_train.main(["--model", "DiT-T/4", "--batch-size", "2", "--input-size", "16", "--num-classes", "10",
                        "--device", "cpu", "--steps", "1", "--warmup", "1", "--trace", str(trace), "--json", str(out)])
    summary = json.loads(out.read_text())
    events = json.loads(gzip.decompress(trace.read_bytes()))["traceEvents"]
    assert any(e.get("name") == "aten::mm" for e in events)
    assert sum(summary["shares"].values()) == pytest.approx(1.0)
    assert summary["shares"]["matmul"] > 0 and summary["shares"]["other"] > 0
    shares = [k["share"] for k in summary["top_kernels"]]
    assert shares == sorted(shares, reverse=True) and summary["setup"]["model"] == "DiT-T/4"
