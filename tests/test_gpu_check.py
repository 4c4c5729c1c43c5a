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
    assert set(doc["section_s"]) == {"meta_step", "resnet50_memory", "candidate_eval", "scratch", "latency",
                                     "meta_train_cli"}
