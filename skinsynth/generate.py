"""Run a recipe through a text-to-image pipeline into a resumable dataset of Arrow shards.

The plan fixes every image (prompt, seed, guidance); shards fix which images go together; batches are formed inside
a shard only. So a shard is a pure function of (recipe, model, batch size): an interrupted run regenerates exactly
its unfinished shards, several processes can share the shards, and the result is the same row for row.

A shard is complete when its record (`.skinsynth/shards/*.json`: rows, sha256, rejections, timing) exists; the
record is written after the shard file has been renamed into place. `generation.json` states the run's identity
(everything that changes a shard's bytes: recipe hash, model, LoRA, embeddings, batch size, filter, device type,
library versions) from the first moment, and its shard list once everything is done; its `run` section (start and
end times, timings) is the only part that differs between two runs of the same command.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path


from .errors import OutputError, SkinsynthError
from .families import family_for
from .image_maker import ImageMaker
from .images import encode_image
from .plan import ImageJob, SplitPlan, plan
from .ranks import FailureWatch
from .recipe import Recipe, load_recipe
from .run_folder import IDENTITY_LIBRARIES, MANIFEST, STATE_DIR, acquire_lock, check_output, check_same_run, prepare_output, undone_on_failure
from .shards import ShardInfo, ShardWriter, atomic_write_json, shard_file, shard_ranges, splits_manifest
from .versions import library_versions

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp"}


def dataset_features(recipe: Recipe, score_columns: tuple[str, ...] = ()):
    """The columns of a synthetic dataset: the image, its label, everything needed to make it again, and the
    filter's scores (`score_columns`) when generation was filtered."""
    import datasets

    return datasets.Features(
        {
            "image": datasets.Image(),
            "label": datasets.ClassLabel(names=recipe.label_names),
            "prompt": datasets.Value("string"),
            "negative_prompt": datasets.Value("string"),
            "seed": datasets.Value("int64"),
            "guidance_scale": datasets.Value("float32"),
            "num_inference_steps": datasets.Value("int32"),
            **{name: datasets.Value("string") for name in recipe.attributes},
            **{name: datasets.Value("float32") for name in score_columns},
        }
    )


@dataclass(frozen=True)
class ShardTask:
    split: str
    index: int
    num_shards: int
    start: int
    stop: int

    @property
    def file(self) -> str:
        return shard_file(self.split, self.index, self.num_shards)

    @property
    def record_name(self) -> str:
        return f"{self.split}-{self.index:05d}-of-{self.num_shards:05d}.json"


def shard_tasks(plans: dict[str, SplitPlan], shard_size: int) -> list[ShardTask]:
    """The shards to write; an empty split gets none (`load_dataset` cannot read a split of empty shards)."""
    tasks = []
    for split, split_plan in plans.items():
        if len(split_plan) == 0:
            logger.warning("split %s has no images; it is left out of the dataset", split)
            continue
        ranges = shard_ranges(len(split_plan), shard_size)
        tasks += [ShardTask(split, i, len(ranges), start, stop) for i, (start, stop) in enumerate(ranges)]
    return tasks


def batches(jobs: list[ImageJob], batch_size: int) -> list[list[ImageJob]]:
    """Group a shard's jobs into pipeline calls: one guidance scale per call, at most `batch_size` images each,
    ordered by their first row.

    Depends only on the shard's jobs and the batch size, so a regenerated shard sees the same batches and
    produces the same pixels. Ordering by first row lets rows be written in order while holding at most about
    one batch per guidance scale.
    """
    by_guidance: dict[float, list[ImageJob]] = {}
    for job in jobs:
        by_guidance.setdefault(job.guidance_scale, []).append(job)
    chunks = [group[i : i + batch_size] for group in by_guidance.values() for i in range(0, len(group), batch_size)]
    return sorted(chunks, key=lambda chunk: chunk[0].index)


def write_shard(out: Path, task: ShardTask, split_plan: SplitPlan, make_images: ImageMaker, batch_size: int, encoder: ThreadPoolExecutor, progress=None) -> dict:
    """Generate, encode and write one shard, rows in plan order.

    Images are encoded in threads while the next batch denoises: a row is written one batch after its image was
    made, once every earlier row is written too, so at most about one batch per guidance scale waits in memory.
    """
    recipe = split_plan.recipe
    generation = recipe.generation
    extension = IMAGE_EXTENSIONS[generation.image_format]
    started = time.perf_counter()
    rejections: Counter = Counter()
    per_class: Counter = Counter()
    waiting: dict[int, tuple[int, dict, Future]] = {}  # row index -> (batch number, row, encoded image)

    def flush(writer: ShardWriter, below: float, made_before: float) -> None:
        for index in sorted(i for i, (number, _, _) in waiting.items() if i < below):
            if waiting[index][0] >= made_before:
                break  # keep row order: later rows wait for this one
            _, row, future = waiting.pop(index)
            row["image"] = {"bytes": future.result(), "path": f"{task.split}-{index:08d}.{extension}"}
            writer.write(row)

    shard_batches = batches(split_plan.jobs(task.start, task.stop), batch_size)
    with ShardWriter(out, task.file, dataset_features(recipe, make_images.score_columns)) as writer:
        for number, batch in enumerate(shard_batches):
            for job, seed, pixels, scores in make_images(batch, rejections, per_class):
                row = {"label": job.label, "prompt": job.prompt, "negative_prompt": job.negative_prompt, "seed": seed,
                       "guidance_scale": job.guidance_scale, "num_inference_steps": job.num_inference_steps, **job.attributes, **scores}
                waiting[job.index] = (number, row, encoder.submit(encode_image, pixels, generation.image_format, generation.quality))
            next_row = shard_batches[number + 1][0].index if number + 1 < len(shard_batches) else math.inf
            flush(writer, below=next_row, made_before=number)
            if progress is not None:
                progress.update(len(batch))
        flush(writer, below=math.inf, made_before=math.inf)
    info: ShardInfo = writer.info
    seconds = time.perf_counter() - started
    by_class: dict[str, dict[str, int]] = {}
    for (reason, name), count in sorted(per_class.items()):
        by_class.setdefault(reason, {})[name] = count
    record = {**info.to_dict(), "split": task.split, "rejections": dict(rejections), "rejections_per_class": by_class, "batch_size": batch_size, "seconds": round(seconds, 3)}
    atomic_write_json(out / STATE_DIR / "shards" / task.record_name, record)
    logger.info("wrote %s: %d images in %.1f s", task.file, info.num_rows, seconds)
    return record


def _broadcast(state, value):
    """`value` as the main process has it, on every process (several processes: one collective call)."""
    if state.num_processes == 1:
        return value
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([value])[0]


def remaining_tasks(out: Path, tasks: list[ShardTask]) -> list[int]:
    """The indices of the shards without both a record and a file: what this run still has to write."""
    records = out / STATE_DIR / "shards"
    return [i for i, t in enumerate(tasks) if not (records / t.record_name).is_file() or not (out / t.file).is_file()]


def generate(
    recipe: Recipe | str | Path,
    model: str,
    out: str | Path,
    *,
    batch_size: int = 8,
    device: str | None = None,
    dtype: str = "auto",
    revision: str | None = None,
    lora: str | None = None,
    embeddings: list[str] | tuple[str, ...] = (),
    limit: int | None = None,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    progress: bool = True,
    pipeline=None,
    push_to_hub: str | None = None,
    private: bool = False,
    image_filter=None,
    copy_filter=None,
    cpu_offload: bool = False,
) -> dict:
    """Generate the dataset described by `recipe` with `model` into `out`, resuming an interrupted run.

    Mirrors `skinsynth generate`. Under `accelerate launch` each process takes a share of the shards, and one failing
    stops them all with its message and exit code (`skinsynth.ranks`).
    `pipeline` (a loaded pipeline, with its `ModelInfo`) skips loading, for callers that hold one already.
    Writes the dataset card (`out/README.md`) and, with `push_to_hub`, publishes the dataset under that Hub id.
    `image_filter` (`skinsynth.audit.filter.FilterConfig`, or an `ImageFilter` already built) keeps only images that
    pass it, retrying the others with their next seeds. `copy_filter` (`skinsynth.audit.copy_filter.CopyFilterConfig`,
    or a `CopyFilter`) likewise remakes every image that is a near copy of one of the model's training images.
    `allow_pickle` lets LoRA and textual-inversion weights load
    from pickled `.bin` files (which can run code); by default only safetensors load.
    `cpu_offload` moves each model to the GPU only while it runs (less GPU memory, same images; see `load_pipeline`).
    `out` must be absent, empty, or an earlier run of this same command: everything that changes the images'
    bytes (recipe, model, options, library versions) must match, or the run is refused before anything is written.
    Returns the manifest (`out/generation.json`).
    """
    from .hub import check_repo_id

    recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    if batch_size < 1:
        raise SkinsynthError(f"`--batch-size` must be at least 1, got {batch_size}")
    if limit is not None and limit < 0:
        raise SkinsynthError(f"`--limit` must be zero or more, got {limit}")
    if push_to_hub is not None:
        check_repo_id(push_to_hub)
    check_output(out)
    # Only now the heavy imports (torch through accelerate and diffusers): a refused input answers at once.
    from accelerate import PartialState
    from tqdm.auto import tqdm

    from .card import CARD_FILE, GRID_FILE, write_dataset_card
    from .hub import push_to_hub as push
    from .pipeline import check_device, default_device, load_pipeline

    out = Path(out)
    device = check_device(device) if device else None
    use_cpu = (device or default_device()) == "cpu"
    state = PartialState(cpu=use_cpu)
    device = device if state.num_processes == 1 and device else str(state.device)
    versions = library_versions()
    identity = {"recipe_sha256": recipe.fingerprint(), "limit": limit, "batch_size": batch_size, "device_type": device.split(":")[0],
                "libraries": {name: versions.get(name) for name in IDENTITY_LIBRARIES}}
    check_same_run(out, identity, keys=identity, recipe=recipe)  # fail fast, before loading the model

    # The main process holds the lock for the whole run; every process learns whether it got it.
    lock, refusal, created = None, None, []
    if state.is_main_process:
        try:
            created = prepare_output(out)
            lock = acquire_lock(out)
        except OutputError as err:
            refusal = str(err)
        if lock is None and refusal is None:
            refusal = f"another `skinsynth generate` is writing to `{out}` (lock {out / STATE_DIR / 'lock'}); wait for it or choose another --out"
    refusal = _broadcast(state, refusal)
    if refusal is not None:
        raise OutputError(refusal)
    watch = FailureWatch(state)  # from here on, one process failing stops them all
    try:
        with undone_on_failure(created):  # a failed start (mistyped model, refused filter, Ctrl-C) leaves no trace
            pipe, model_info = pipeline or load_pipeline(
                model, revision=revision, device=device, dtype=dtype, lora=lora, embeddings=embeddings,
                scheduler=recipe.generation.scheduler, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle, recipe=recipe,
                cpu_offload=cpu_offload,
            )
            if copy_filter is not None:  # it may read the training data the model records, relative to the model's folder
                copy_filter = _build_copy_filter(copy_filter, model_info, device, progress)
                identity["copy_filter"] = copy_filter.identity()
            model_info = model_info.relative_to(out)  # no absolute local path in what is written
            family = family_for(model_info.pipeline_class)
            family.check(recipe, pipe)  # again with what only the loaded weights say (and for a pipeline passed in)
            identity["model"] = model_info.identity()
            _warn_about_unlearned_negatives(recipe, model_info.finetune or {}, model)
            if image_filter is not None:
                image_filter = _build_filter(image_filter, recipe, device, progress)
                identity["filter"] = image_filter.summary(relative_to=out)
            manifest = check_same_run(out, identity, recipe=recipe)
        plans = plan(recipe, limit)
        tasks = shard_tasks(plans, recipe.generation.shard_size)
        # The work is shared out once, by the main process, from the state before anyone starts: a process that
        # finishes a shard early cannot change what another one is given.
        remaining_indices = None
        if state.is_main_process:
            for stale in (out / "data").glob(".*.tmp"):
                stale.unlink()
            if manifest is None:
                manifest = {"identity": identity, "status": "incomplete", "recipe": recipe.to_dict(), "model": model_info.to_dict(),
                            "library_versions": versions, "run": {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}}
                if image_filter is not None:
                    manifest["filter"] = image_filter.summary(relative_to=out)
                if copy_filter is not None:
                    manifest["copy_filter"] = copy_filter.summary(relative_to=out)
                atomic_write_json(out / MANIFEST, manifest)
            elif manifest["identity"]["recipe_sha256"] != identity["recipe_sha256"]:  # resumed with a raised max_attempts
                manifest = {**manifest, "identity": {**manifest["identity"], "recipe_sha256": identity["recipe_sha256"]}, "recipe": recipe.to_dict()}
                atomic_write_json(out / MANIFEST, manifest)
            remaining_indices = remaining_tasks(out, tasks)
        remaining = [tasks[i] for i in _broadcast(state, remaining_indices)]

        started = time.perf_counter()
        with state.split_between_processes(remaining) as mine, ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as encoder:
            total = sum(t.stop - t.start for t in mine)
            with tqdm(total=total, unit="img", desc=f"generating {recipe.name}", disable=not (progress and state.is_main_process)) as bar:
                make_images = ImageMaker(pipe, recipe, _chain(image_filter, copy_filter), family)
                for task in mine:
                    write_shard(out, task, plans[task.split], make_images, batch_size, encoder, bar)
        state.wait_for_everyone()
        if state.is_main_process:
            # Finishing resumes like the rest: a run killed after its manifest said complete gets its card on the next try.
            finishing = bool(remaining) or manifest["status"] != "complete"
            if finishing:
                manifest = finalize_manifest(out, manifest, tasks, time.perf_counter() - started)
            if finishing or not (out / CARD_FILE).is_file() or not (out / GRID_FILE).is_file():
                write_dataset_card(out)
        state.wait_for_everyone()
        if push_to_hub is not None and state.is_main_process:  # after the barrier: the other processes may exit meanwhile
            push(out, push_to_hub, private=private, progress=progress)
        return json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    except BaseException as err:
        watch.failed(err)
        raise
    finally:
        watch.close()
        if lock is not None:
            lock.release()


def _warn_about_unlearned_negatives(recipe: Recipe, finetune: dict, model) -> None:
    """Negative prompts a model trained from scratch never saw in training guide it away from text it does not know
    (a fine-tuned base still reads any text)."""
    if finetune.get("method") == "scratch" and recipe.prompts.negative:
        logger.warning(
            "`%s` was trained from scratch with an empty caption as its unconditional input, never with a negative prompt: "
            "the recipe's `prompts.negative` (%r) pushes it away from text it never learned; set `negative: ''`", model, recipe.prompts.negative,
        )
    if finetune.get("method") == "scratch" and recipe.prompts.class_free_negative and not (finetune.get("hyperparameters") or {}).get("class_dropout"):
        logger.warning(
            "the recipe's `class_free_negative` guides against each prompt without its class, a caption `%s` never learned: it was "
            "trained from scratch without `--class-dropout`; train with `--class-dropout 0.1`, or leave `class_free_negative` out", model,
        )


def _build_filter(image_filter, recipe: Recipe, device: str, progress: bool):
    from .audit.filter import FilterConfig, build_filter

    if not isinstance(image_filter, FilterConfig):
        return image_filter
    return build_filter(image_filter, recipe.label_names, [c.text for c in recipe.classes], device=device, progress=progress)


def _build_copy_filter(copy_filter, model_info, device: str, progress: bool):
    from .audit.copy_filter import CopyFilterConfig, build_copy_filter

    if not isinstance(copy_filter, CopyFilterConfig):
        return copy_filter
    return build_copy_filter(copy_filter, model_info.to_dict(), device=device, progress=progress)


def _chain(image_filter, copy_filter):
    """The classifier filter, then the copy check (the dearer one, on what the classifier kept)."""
    if copy_filter is None:
        return image_filter
    from .audit.filter import FilterChain

    return FilterChain(image_filter, copy_filter)


def finalize_manifest(out: Path, manifest: dict, tasks: list[ShardTask], seconds: float) -> dict:
    """Collect the shard records into `generation.json` and mark the run complete."""
    from .audit.copy_filter import COPY

    records = [json.loads((out / STATE_DIR / "shards" / t.record_name).read_text()) for t in tasks]
    infos: dict[str, list[ShardInfo]] = {}
    rejections: Counter = Counter()
    per_class: dict[str, Counter] = {}
    for record in records:
        infos.setdefault(record["split"], []).append(ShardInfo(**{k: record[k] for k in ("file", "num_rows", "num_bytes", "sha256")}))
        rejections.update(record["rejections"])
        for reason, counts in record.get("rejections_per_class", {}).items():
            per_class.setdefault(reason, Counter()).update(counts)
    generated = sum(r["num_rows"] for r in records)
    busy = sum(r["seconds"] for r in records)
    manifest = {
        **manifest,
        "status": "complete",
        "splits": splits_manifest(infos),
        "rejections": dict(rejections),
        "rejections_per_class": {reason: dict(sorted(counts.items())) for reason, counts in sorted(per_class.items())},
        **({"filter": {**manifest["filter"], "rejections": dict(rejections)}} if "filter" in manifest else {}),
        **({"copy_filter": {**manifest["copy_filter"], "rejections": rejections.get(COPY, 0), "rejections_per_class": dict(sorted(per_class.get(COPY, {}).items()))}}
           if "copy_filter" in manifest else {}),
        "run": {**manifest.get("run", {}), "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "timing": {"last_run_seconds": round(seconds, 3), "shard_seconds": round(busy, 3), "images_per_second": round(generated / busy, 3) if busy else None}},
    }
    atomic_write_json(out / MANIFEST, manifest)
    return manifest
