"""scripts/gpu_check.sh (issue 15) runs end to end in its CPU quick mode, so the GPU script cannot rot."""
from __future__ import annotations

import json
import os
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_gpu_check_quick_on_cpu_writes_every_figure_without_ray_or_deap(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", "scripts/gpu_check.sh", "--device", "cpu", "--quick", "--threads", "1",
                           "--out", str(out)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["quick"] is True and doc["imported"] == []  # no Ray, DEAP or YAML: the GPU machines lack them
    assert [m["batch"] for m in doc["meta_step"]] == [4, 8]
    assert all(m["meta_ms"] > 0 and m["static_ms"] > 0 and m["ratio"] > 0 and m["meta_pool_ms"] > 0 for m in doc["meta_step"])
    assert all(m["meta_nchw_conv_ms"] > 0 and m["meta_matmul_ms"] > 0 and m["static_cl_ms"] > 0 for m in doc["meta_step"])
    assert doc["resnet50_memory"]["generator_params"] > 0
    ev = doc["candidate_eval"]
    assert ev["candidates"] == 2 and 0 < ev["min_s"] <= ev["median_s"] <= ev["max_s"]
    assert set(doc["scratch"]["images_per_s"]) == {"fp32", "bf16", "fp32+channels_last", "bf16+channels_last"}
    assert all(v > 0 for v in doc["scratch"]["images_per_s"].values())
    (lat,) = doc["latency"]
    assert lat["entries"] > 0 and lat["vectors"] == 2 and lat["mape_pct"] >= 0 and lat["measured_ms_range"][0] > 0
    (train,) = doc["meta_train_cli"]  # the CLI's own meta-training on the chosen device
    assert train["returncode"] == 0 and train["state"] == "done" and train["step"] == 2
    assert train["device"] == "cpu" and train["pruningnet_written"]
    chk = doc["masked_check"]  # masked execution computes the sliced logits on this device (issue 29)
    assert chk["logits_max_abs_diff"] <= 1e-4 * chk["logits_max_abs"] and chk["grad_max_abs"] > 0
    (ms,) = doc["masked_step"]  # quick: one batch; capture is CUDA-only and says so
    assert ms["batch"] == 4 and ms["masked_ms"] > 0 and ms["sliced_ms"] > 0 and ms["ratio_masked"] > 0
    assert ms["masked_graphs"] == ms["masked_compile"] == "skipped: capture needs CUDA"
    me = doc["masked_eval"]
    assert me["candidates"] == 2 and 0 < me["masked"]["min_s"] <= me["masked"]["median_s"] <= me["masked"]["max_s"]
    assert me["sliced"]["median_s"] > 0 and me["top1_max_abs_diff"] <= 1 / 64  # at most one image of 64 flips
    (lg,) = doc["latency_graphs"]  # on the CPU one timing (graphs are CUDA's), per batch size
    assert lg["timing"] == "cpu" and lg["batch"] == 1 and lg["mape_pct"] >= 0 and lg["round_spread_pct"] >= 0
    assert set(doc["section_s"]) == {"meta_step", "resnet50_memory", "candidate_eval", "scratch", "latency",
                                     "masked_check", "masked_step", "masked_eval", "latency_graphs",
                                     "meta_train_cli"}
