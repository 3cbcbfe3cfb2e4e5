"""Throughput of `skinsynth generate` against a bare diffusers loop, and its peak memory against dataset size.

The model is the tiny offline pipeline with an 8x VAE (or any pipeline given with --model). The baseline is what peer scripts do: call the same pipeline on the same batches (same prompts, seeds, guidance,
steps) and save each image as a PNG file, encoding in the loop. skinsynth encodes in threads while the next batch
denoises, and writes Arrow shards. Both run in this process, alternately, so the ratio is fair on a shared machine.

    python benchmarks/bench_generate.py                      # 64 px and 512 px throughput ratios
    python benchmarks/bench_generate.py --rss 1000 10000     # peak RSS of whole runs, each in a fresh process
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def make_recipe(folder: Path, images: int, size: int, steps: int, guidance) -> Path:
    data = yaml.safe_load((REPO / "examples" / "demo.yaml").read_text())
    data["splits"] = {"train": {"total": images}}
    data["generation"].update({"height": size, "width": size, "num_inference_steps": steps, "guidance_scale": guidance, "shard_size": 1000})
    path = folder / f"recipe-{images}-{size}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def bare_loop(pipe, recipe, batch_size: int, out: Path) -> None:
    """The peer-script way: generate a batch, save each image as a PNG file, repeat."""
    import torch

    from skinsynth.generate import batches
    from skinsynth.plan import plan_split

    out.mkdir(parents=True)
    split_plan = plan_split(recipe, "train")
    for batch in batches(split_plan.jobs(0, len(split_plan)), batch_size):
        images = pipe(
            prompt=[j.prompt for j in batch], negative_prompt=[j.negative_prompt for j in batch],
            num_inference_steps=batch[0].num_inference_steps, guidance_scale=batch[0].guidance_scale,
            height=recipe.generation.height, width=recipe.generation.width,
            generator=[torch.Generator("cpu").manual_seed(j.seed) for j in batch],
        ).images
        for job, image in zip(batch, images):
            image.save(out / f"{job.index:06d}.png")


def throughput(model: str, size: int, images: int, steps: int, batch_size: int, repeats: int) -> dict:
    from skinsynth.generate import generate
    from skinsynth.pipeline import load_pipeline
    from skinsynth.recipe import load_recipe

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        recipe = load_recipe(make_recipe(tmp, images, size, steps, 4.0))
        pipe, info = load_pipeline(model, device=None)
        bare_loop(pipe, load_recipe(make_recipe(tmp, batch_size, size, steps, 4.0)), batch_size, tmp / "warmup")
        times = {"bare": [], "skinsynth": []}
        for r in range(repeats):  # alternate, so both see the same machine load
            started = time.perf_counter()
            bare_loop(pipe, recipe, batch_size, tmp / f"bare-{r}")
            times["bare"].append(time.perf_counter() - started)
            started = time.perf_counter()
            generate(recipe, model, tmp / f"skinsynth-{r}", batch_size=batch_size, progress=False, pipeline=(pipe, info))
            times["skinsynth"].append(time.perf_counter() - started)
    bare, ours = min(times["bare"]), min(times["skinsynth"])
    return {"size": size, "images": images, "steps": steps, "batch_size": batch_size, "bare_img_s": images / bare, "skinsynth_img_s": images / ours, "ratio": bare / ours}


def bench_pipeline(path: str) -> None:
    """The tiny pipeline with a 4-level VAE: latents 8x smaller than images, as in Stable Diffusion, so that a
    512 px image costs a 64x64 latent UNet (not 256x256) and PNG encoding weighs what it weighs with real models."""
    import torch
    from diffusers import AutoencoderKL, StableDiffusionPipeline

    from skinsynth.tiny import tiny_pipeline

    pipe = tiny_pipeline(path)
    torch.manual_seed(0)
    pipe.vae = AutoencoderKL(block_out_channels=(32, 32, 64, 64), down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, sample_size=512)
    StableDiffusionPipeline(**pipe.components).save_pretrained(path, safe_serialization=True)


MEASURE_RSS = """
import resource, sys
from skinsynth.generate import generate
generate(sys.argv[1], sys.argv[2], sys.argv[3], batch_size=16, progress=False)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""


def peak_rss(model: str, images: int, size: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        recipe = make_recipe(Path(tmp), images, size, 1, 1.0)
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        result = subprocess.run([sys.executable, "-c", MEASURE_RSS, str(recipe), model, str(Path(tmp) / "out")], env=env, capture_output=True, text=True, check=True)
        return int(result.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="pipeline to use (default: a fresh tiny pipeline)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 512])
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--rss", type=int, nargs="*", metavar="N", help="measure peak RSS of runs of N images (32 px, 1 step) instead")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or str(Path(tmp) / "tiny")
        if args.model is None:
            bench_pipeline(model)
        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}; model: {args.model or 'tiny random-weight SD, 8x VAE'}")
        if args.rss is not None:
            print("| images | peak RSS (MiB) |\n| ---: | ---: |")
            for n in args.rss or [1000, 10000]:
                print(f"| {n} | {peak_rss(model, n, 32)} |", flush=True)
            return
        print("| size | images | steps | batch | bare loop img/s | skinsynth img/s | ratio |\n| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for size in args.sizes:
            r = throughput(model, size, args.images, args.steps, args.batch_size, args.repeats)
            print(f"| {r['size']} | {r['images']} | {r['steps']} | {r['batch_size']} | {r['bare_img_s']:.2f} | {r['skinsynth_img_s']:.2f} | {r['ratio']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
