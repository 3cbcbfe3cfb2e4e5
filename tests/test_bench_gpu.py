"""benchmarks/bench_gpu.py at its CPU size: every family built and run both ways, a ratio for each, LoRA training
against diffusers' example loop, and the full-size architectures it counts (without allocating them) are the
published ones."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Parameter counts of the published models (their config.json at random weights gives the same shapes).
PUBLISHED = {
    ("sd15", "unet"): 859_520_964,
    ("sd15", "vae"): 83_653_863,
    ("sdxl", "unet"): 2_567_463_684,
    ("sdxl", "text_encoder_2"): 694_659_840,  # OpenCLIP bigG
    ("sd3", "transformer"): 2_028_328_000,
    ("sd3", "text_encoder_3"): 4_762_310_656,  # T5-XXL encoder
    ("flux", "transformer"): 11_901_408_320,
    ("flux", "text_encoder"): 123_060_480,  # CLIP ViT-L/14 text
}


@pytest.mark.slow
def test_bench_gpu_runs_every_family_on_the_cpu_and_counts_the_full_size_models(tmp_path):
    report = tmp_path / "bench.json"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench_gpu.py"), "--images", "4", "--batch-size", "2", "--steps", "1", "--repeats", "1", "--json", str(report)],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(report.read_text())
    families = ["sd15", "sdxl", "sd3", "flux"]

    assert [row["family"] for row in results["generation"]] == families
    for row in results["generation"]:
        assert row["size"] == 64 and row["images"] == 4 and row["rejected"] == 0
        assert row["bare_img_s"] > 0 and row["skinsynth_img_s"] > 0
        assert math.isclose(row["ratio"], row["skinsynth_img_s"] / row["bare_img_s"])
        assert 0 < row["skinsynth_peak_mib"] < 64 * 1024
    for title in ("Stable Diffusion 1.5", "Stable Diffusion XL base", "Stable Diffusion 3 medium", "FLUX.1-dev"):
        assert sum(line.startswith(f"| {title} |") for line in result.stdout.splitlines()) == 2  # memory and speed rows
    assert "Computed, not measured" in result.stdout and "ratio" in result.stdout
    [training] = results["training"]
    assert training["family"] == "sd15" and training["steps"] == 3 and training["gradient_accumulation_steps"] == 4
    assert training["example_steps_s"] > 0 and math.isclose(training["ratio"], training["skinsynth_steps_s"] / training["example_steps_s"])
    assert "LoRA training" in result.stdout and "Loading" not in result.stdout + result.stderr  # no progress bars

    memory = {row["family"]: row for row in results["memory"]}
    assert list(memory) == families
    for (family, component), count in PUBLISHED.items():
        assert memory[family]["parameters"][component] == count, (family, component)
    for row in memory.values():
        peaks = row["computed_peak_bytes"]
        weights = 2 * sum(row["parameters"].values())
        assert peaks["batch_1_cpu_offload"] < weights < peaks["batch_1"] < peaks["batch_4"]
    flux = memory["flux"]["computed_peak_bytes"]["batch_1"] / 2**30
    assert 32 < flux < 36  # 24 GB of bf16 transformer + 9.5 GB of T5-XXL + CLIP, VAE and activations
