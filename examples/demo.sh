#!/usr/bin/env bash
# The demo: install skinsynth, build the tiny offline pipeline, generate a small 3-class dataset, show how to load it.
# With a real model, replace `--model tiny-sd` by a Hub id or your fine-tuned pipeline, on a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q torch==2.13.0
.venv/bin/pip install -q -e .
export HF_HUB_OFFLINE=1  # the tiny pipeline is built locally: nothing is downloaded
[ -f tiny-sd/model_index.json ] || .venv/bin/skinsynth tiny-pipeline tiny-sd
.venv/bin/skinsynth generate examples/demo.yaml --model tiny-sd --out demo-output --batch-size 8
.venv/bin/python - <<'PY'
from datasets import load_dataset

dataset = load_dataset("demo-output")
print(dataset)
print(dataset["train"].features["label"].names)
print(dataset["train"][0]["prompt"])
PY
