"""scripts/benchmark.py runs and writes its JSON and markdown (no timing is asserted: speed lives in the JSON)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from audiokit.inference import default_cpu_streams

REPO = Path(__file__).resolve().parents[1]


def test_benchmark_writes_json_and_table(tmp_path):
    out = tmp_path / "bench.json"
    script = str(REPO / "scripts" / "benchmark.py")
    options = "--models efficientat_mn01 --files 2 --batch-sizes 2 --workers 0 --model-only-repeats 1 --device cpu"
    options += " --rounds 3 --cpu-streams 2"
    options += " --long-file-minutes 0.5 --many-files 3 12 --many-files-seconds 0.5"
    cmd = [sys.executable, script, *options.split(), "--output", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    entry = report["results"]["efficientat_mn01"]
    assert entry["params"] == 123_783 and report["device"] == "cpu"
    (e2e,) = entry["end_to_end"]
    assert e2e["files"] == 2 and e2e["files_per_s"] > 0 and e2e["peak_rss_mb"] > 0 and e2e["cpu_streams"] == 2
    assert entry["model_only"][0]["clips_per_s"] > 0
    # every figure is the median of three interleaved rounds; the ratio is the median of the per-round ratios
    assert len(e2e["files_per_s_runs"]) == 3 and e2e["files_per_s"] == sorted(e2e["files_per_s_runs"])[1]
    assert entry["peer"]["files"] == 2 and entry["peer"]["files_per_s"] == sorted(entry["peer"]["files_per_s_runs"])[1]
    paired = [a / b for a, b in zip(e2e["files_per_s_runs"], entry["peer"]["files_per_s_runs"])]
    assert entry["ratio_vs_peer_runs"] == [round(r, 2) for r in paired]
    assert entry["ratio_vs_peer"] == round(sorted(paired)[1], 2)
    long = report["long_file"]
    assert long["model"] == "efficientat_mn01" and list(long["runs"]) == ["10 s", "0.5 min"]
    assert long["runs"]["0.5 min"]["audio_seconds"] == 30.0 and long["runs"]["0.5 min"]["windows"] == 1
    assert long["rss_ratio_long_vs_10s"] == round(
        long["runs"]["0.5 min"]["peak_rss_mb"] / long["runs"]["10 s"]["peak_rss_mb"], 2
    )
    many = report["many_files"]
    assert many["model"] == "efficientat_mn01" and list(many["runs"]) == ["3", "12"] and many["clip_seconds"] == 0.5
    assert [run["files"] for run in many["runs"].values()] == [3, 12]
    assert many["rss_ratio_most_vs_fewest"] == round(
        many["runs"]["12"]["peak_rss_mb"] / many["runs"]["3"]["peak_rss_mb"], 2
    )
    table = out.with_suffix(".md").read_text()
    assert "efficientat_mn01 (peer: librosa.load + forward per file)" in table
    assert "| efficientat_mn01 | 2 | 0 | 2 |" in table
    assert "| peak RSS ratio (long / 10 s) |" in table
    assert "| 12 files |" in table and "| peak RSS ratio (most / fewest files) |" in table


def test_benchmark_finetune_writes_throughput_and_data_wait(tmp_path):
    out = tmp_path / "bench.json"
    script = str(REPO / "scripts" / "benchmark.py")
    tagging = "--models efficientat_mn01 --files 1 --batch-sizes 1 --workers 0 --model-only-repeats 1 --no-peers"
    # and the default --cpu-streams: the row gives the count the runner chose
    tagging += " --long-file-minutes 0 --many-files 0"
    tagging += " --backends eager onnxruntime"
    finetune = "--finetune bcresnet_1 --finetune-clips 16 --finetune-seconds 1 --finetune-batch-size 4"
    cmd = [sys.executable, script, *tagging.split(), *finetune.split(), "--finetune-workers", "0", "--device", "cpu",
           "--output", str(out)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert list(report["results"]) == ["efficientat_mn01"] and list(report["finetune"]) == ["bcresnet_1"]
    backends = [(r["backend"], r["batch_size"]) for r in report["results"]["efficientat_mn01"]["model_only"]]
    assert backends == [("eager", 1), ("onnxruntime", 1)]
    row = report["finetune"]["bcresnet_1"]
    assert row["clips"] == 16 and row["train_clips"] + row["val_clips"] == 16 and row["epochs"] == 1
    assert row["samples_per_s"] > 0 and row["train_seconds"] > 0 and row["peak_rss_mb"] > 0
    assert 0 <= row["data_wait_s"] <= row["train_seconds"] and 0 <= row["data_wait_fraction"] <= 1
    assert row["cache_build_seconds"] > 0 and "peak_cuda_mb" not in row
    assert [epoch["epoch"] for epoch in row["per_epoch"]] == [1]
    table = out.with_suffix(".md").read_text()
    assert "| efficientat_mn01 | 1 | 0 |" in table  # the tagging rows are still there
    assert "| efficientat_mn01 (model only, onnxruntime float32) | 1 |" in table
    assert report["results"]["efficientat_mn01"]["end_to_end"][0]["cpu_streams"] == default_cpu_streams(0)
    assert "| bcresnet_1 | 12 x 1 | 4 | 0 |" in table
