#!/usr/bin/env bash
# The demo, offline on a CPU in a few minutes: draw a toy dataset whose three classes differ by shape and texture, not
# colour (no patient images), train a text-to-image pipeline on it from scratch, generate a labeled synthetic dataset
# with it, benchmark a classifier trained on the synthetic images against one trained on the real ones (both tested on
# real images), and measure the generator's label fidelity. Everything lands in demo-output/.
# With your own photos and a GPU: `skinsynth prepare`, then `finetune --method lora --base <SD model>` (README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q torch==2.13.0
.venv/bin/pip install -q -e .
export HF_HUB_OFFLINE=1  # nothing is downloaded: the data is drawn, the models are trained here
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # tiny models gain nothing from a second thread, and lose much when the CPU is shared
out=demo-output
s=.venv/bin/skinsynth

[ -f $out/toy/prepare.json ] || { .venv/bin/python dataset_scripts/toy_shapes.py $out/toy-images --per-class 200 && $s -q prepare $out/toy-images --format imagefolder --out $out/toy; }
# 600 autoencoder steps, then 1,400 for the UNet and text encoder (about 4 minutes on 2 cores); resumes if interrupted.
[ -f $out/model/skinsynth_model.json ] || $s finetune --method scratch --size tiny --data $out/toy --recipe examples/toy.yaml --out $out/model \
    --max-steps 2000 --batch-size 16 --class-balance 1 --ema --checkpoint-every 500 --validate-every 0 --validation-images 6 $( [ -d $out/model ] && echo --resume )
$s generate examples/toy.yaml --model $out/model --out $out/synthetic --batch-size 30
[ -d $out/resnet ] || .venv/bin/python -c "from transformers import ResNetConfig; ResNetConfig(embedding_size=16, hidden_sizes=[16, 32, 64], depths=[1, 1, 1], layer_type='basic').save_pretrained('$out/resnet')"
$s -q benchmark --real $out/toy --synthetic $out/synthetic --arms examples/toy-arms.yaml --model $out/resnet --image-size 32 --epochs 30 --patience 10 \
    --batch-size 32 --seeds 3 --device cpu --out $out/benchmark --update-card $out/synthetic
$s -q audit fidelity $out/synthetic --classifier $out/benchmark/models/real --real $out/toy --out $out/fidelity --update-card
.venv/bin/python - <<'PY'
from datasets import load_dataset

dataset = load_dataset("demo-output/synthetic")
print(dataset)
print(dataset["train"].features["label"].names, "|", dataset["train"][0]["prompt"])
print("the samples: demo-output/fidelity/fidelity_grid.png (rows: classes; columns: the same seed); the card: demo-output/synthetic/README.md")
PY
