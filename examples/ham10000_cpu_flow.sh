#!/usr/bin/env bash
# The whole skinsynth flow on HAM10000, on a CPU, offline: prepare the real data, fine-tune the tiny random-weight
# pipeline with LoRA at 64 px, generate a synthetic twin from `recipe-from`, and benchmark a small ResNet trained from
# scratch on real, mixed and synthetic arms (akrout2023 preset at --scale 0.15: 38 / 75 images per class, HAM10000's
# rarest class has 115), tested on the real test split, 3 seeds. The synthetic figures are poor by design (a tiny
# model from scratch makes noise); the flow is what this shows. README.md gives the figures and times.
#
#   . .venv/bin/activate && bash examples/ham10000_cpu_flow.sh [HAM10000_DIR] [WORK_DIR]
#
# On a GPU, the same commands with `--base stable-diffusion-v1-5/stable-diffusion-v1-5 --resolution 512`, recipes
# at `--size 512`, a pretrained `--model microsoft/resnet-50` and the preset at full scale reproduce the paper.
set -euo pipefail

HAM10000=${1:-../shared/data/ham10000}
WORK=${2:-./bench-output/ham10000-cpu-flow}
export HF_HUB_OFFLINE=1
mkdir -p "$WORK"
step() { echo; echo "== $*"; }

step "prepare HAM10000 (lesion-grouped train / validation / test)"
[ -f "$WORK/ham10000/prepare.json" ] || time skinsynth -q prepare "$HAM10000" --format ham10000 --out "$WORK/ham10000"

step "recipe of a synthetic twin: 75 images per class, 64 px, 10 steps"
skinsynth recipe-from "$WORK/ham10000" --out "$WORK/twin.yaml" --per-class 75 --size 64 --steps 10 --overwrite

step "fine-tune the tiny pipeline with LoRA on the real train split"
[ -f "$WORK/tiny-sd/model_index.json" ] || skinsynth tiny-pipeline "$WORK/tiny-sd"
[ -f "$WORK/lora/skinsynth_model.json" ] || time skinsynth -q finetune --base "$WORK/tiny-sd" --data "$WORK/ham10000" --recipe "$WORK/twin.yaml" \
    --method lora --out "$WORK/lora" --max-steps 200 --resolution 64 --learning-rate 1e-3 --batch-size 8 \
    --checkpoint-every 100 --validate-every 200 --validation-images 2

step "generate the twin with the fine-tuned LoRA"
time skinsynth -q generate "$WORK/twin.yaml" --model "$WORK/tiny-sd" --lora "$WORK/lora" --out "$WORK/twin" --batch-size 16

step "benchmark: real, hybrid and synthetic arms, tested on real images"
# A ResNet with one basic block per stage, widths 32-64-128-256 (0.7M parameters): a config only, trained from scratch.
python -c "from transformers import ResNetConfig; ResNetConfig(embedding_size=32, hidden_sizes=[32, 64, 128, 256], depths=[1, 1, 1, 1], layer_type='basic').save_pretrained('$WORK/resnet-small')"
time skinsynth -q benchmark --real "$WORK/ham10000" --synthetic "$WORK/twin" --preset akrout2023 --scale 0.15 \
    --model "$WORK/resnet-small" --image-size 64 --epochs 20 --patience 10 --batch-size 32 --seeds 3 --device cpu \
    --out "$WORK/benchmark" --update-card "$WORK/twin"
cat "$WORK/benchmark/results.md"

step "audits: memorization (threshold at a 1 % false-positive rate, measured, with planted-copy recall) and quality"
time skinsynth -q audit memorization "$WORK/twin" --train "$WORK/ham10000" --features contrastive --out "$WORK/audit" --update-card
time skinsynth -q audit quality "$WORK/twin" --real "$WORK/ham10000" --features contrastive --out "$WORK/audit-quality" --update-card
