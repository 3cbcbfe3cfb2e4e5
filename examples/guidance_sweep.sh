#!/usr/bin/env bash
# Choose a model's guidance scale and step count by label fidelity: generate a small twin (30 images per class) at each
# setting from the same recipe and seeds, and run `skinsynth audit fidelity` on it with the same real classifiers.
#
#   . .venv/bin/activate && bash examples/guidance_sweep.sh RECIPE MODEL CLASSIFIERS REAL WORK_DIR
#
# e.g. after examples/ham10000_cpu_flow.sh (W=bench-output/ham10000-cpu-flow):
#   bash examples/guidance_sweep.sh $W/twin.yaml $W/scratch $W/benchmark/models/real-500 $W/ham10000 $W/sweep
# Prints one line per setting: balanced fidelity, prompt following, seed following. Finished points are kept.
set -euo pipefail
RECIPE=$1 MODEL=$2 CLASSIFIERS=$3 REAL=$4 WORK=$5
GUIDANCE=${GUIDANCE:-"1.5 3 5 7.5 10"}
STEPS=${SWEEP_STEPS:-"10 25"}
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p "$WORK"
echo "| guidance | steps | fidelity (balanced) | prompt following | seed following |"
echo "| ---: | ---: | ---: | ---: | ---: |"
for steps in $STEPS; do
    for g in $GUIDANCE; do
        point="$WORK/g$g-s$steps"
        sed -e "s/^  guidance_scale: .*/  guidance_scale: $g/" -e "s/^  num_inference_steps: .*/  num_inference_steps: $steps/" \
            -e "0,/per_class: [0-9]*/s//per_class: 30/" "$RECIPE" > "$point.yaml"
        [ -f "$point/fidelity/fidelity.json" ] || {
            skinsynth -q generate "$point.yaml" --model "$MODEL" --out "$point/twin" --batch-size 16 > "$point.log" 2>&1
            skinsynth -q audit fidelity "$point/twin" --classifier "$CLASSIFIERS" --real "$REAL" --out "$point/fidelity" >> "$point.log" 2>&1
        }
        python - "$point/fidelity/fidelity.json" "$g" "$steps" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
shared = report["shared_seeds"]
print(f"| {sys.argv[2]} | {sys.argv[3]} | {report['synthetic_fidelity']['balanced_accuracy']:.3f} | {shared['prompt_following']:.2f} | {shared['seed_following']:.2f} |")
PY
    done
done
