"""The folder a `generate` run writes into: refuse one that holds something else, create it (and undo that if the
start fails), check that a resumed run is the same run (its identity: everything that changes a shard's bytes), and
lock it for the main process."""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path

from .errors import OutputError
from .recipe import Recipe

MANIFEST = "generation.json"
STATE_DIR = ".skinsynth"

# All a folder may hold to count as a generate run stopped before its manifest was written.
RUN_STATE_ONLY = {STATE_DIR}
# Identity keys and the option a user changes to change them: named when a resume is refused.
IDENTITY_OPTIONS = {
    "recipe_sha256": "recipe (on resume, only `generation.max_attempts` may be raised)", "limit": "--limit", "batch_size": "--batch-size", "device_type": "--device",
    "libraries": "installed library versions", "filter": "filter (--filter-* options)", "model": "--model",
    "revision": "--revision", "commit": "--model/--revision (Hub commit)", "fingerprint": "--model (the folder's files changed)",
    "pipeline_class": "--model", "scheduler": "recipe's generation.scheduler", "dtype": "--dtype", "lora": "--lora",
    "embeddings": "--embeddings", "copy_filter": "copy filter (--filter-copies options, or the real dataset's images)",
}
ABSENT = "<absent>"  # an identity key one side does not have
IDENTITY_LIBRARIES = ("torch", "diffusers", "transformers")  # their versions change pixels


def check_output(out: str | Path) -> None:
    """Refuse `out` unless it is absent, empty, or holds a `skinsynth generate` run; reads only, writes nothing.

    A run is recognised by its manifest, or, for a run stopped before writing one, by a folder holding nothing but
    `.skinsynth/`. Anything else (a project, a `prepare` dataset, a home folder) would get its files overwritten.
    """
    if not str(out).strip():  # Path("") is the working directory
        raise OutputError("`--out` is empty; name the dataset folder (a new or empty one, or an unfinished run to resume)")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"`--out {out}` is a file; give a new or empty folder")
    if not out.is_dir() or (out / MANIFEST).is_file():
        return
    found = sorted(entry.name for entry in out.iterdir() if entry.name not in RUN_STATE_ONLY)
    if found:
        shown = ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
        raise OutputError(f"`{out}` is not empty ({shown}) and holds no `skinsynth generate` run; choose a new or empty --out")


def prepare_output(out: Path) -> list[Path]:
    """Create `out` and its state folder; return the top folders this call created (to remove if the start fails)."""
    top = out if not out.exists() else out / STATE_DIR
    while not top.parent.exists():
        top = top.parent
    created = [] if top.exists() else [top]
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / STATE_DIR / "shards").mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create output directory `{out}`: {err.strerror or err}") from None
    if not os.access(out, os.W_OK):
        remove_created(created)
        raise OutputError(f"output directory `{out}` is not writable")
    return created


def remove_created(created: list[Path]) -> None:
    import shutil

    for folder in created:
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def undone_on_failure(created: list[Path]):
    """Remove the folders `prepare_output` created when the start fails (mistyped model, refused filter, Ctrl-C)."""
    try:
        yield
    except BaseException:
        remove_created(created)
        raise


def identity_difference(previous: dict, current: dict, keys=None) -> tuple[str, object, object] | None:
    """The first key whose value differs between two identities, with both values (inside `model`, the model's own
    key); a key present on one side only differs too. `keys` limits the comparison to those top-level keys."""
    for key in sorted(set(previous) | set(current) if keys is None else keys):
        old, new = previous.get(key, ABSENT), current.get(key, ABSENT)
        if key == "model" and isinstance(old, dict) and isinstance(new, dict) and old != new:
            return identity_difference(old, new)
        if old != new:
            return key, old, new
    return None


def check_same_run(out: Path, identity: dict, keys=None, recipe: Recipe | None = None) -> dict | None:
    """The manifest already in `out`, after checking it describes the same run; None if `out` holds no run.

    Everything that changes the bytes of a shard is in the identity, and both sides are compared, so a resume can
    never mix shards of two runs. `keys` checks only those (before the model is loaded). The one setting that may
    change is a raised `generation.max_attempts` of `recipe`: every finished row was accepted within the old limit,
    so a higher one would have made the same rows (a lower one might not)."""
    path = out / MANIFEST
    if not path.is_file():
        return None
    manifest = json.loads(path.read_text(encoding="utf-8"))
    previous = manifest.get("identity", {})
    if recipe is not None and _only_more_attempts(manifest.get("recipe"), recipe):
        previous = {**previous, "recipe_sha256": identity.get("recipe_sha256", ABSENT)}
    difference = identity_difference(previous, identity, keys)
    if difference is not None:
        key, old, new = difference
        raise OutputError(
            f"`{out}` holds a run with another {IDENTITY_OPTIONS.get(key, key)} ({key}: {old!r}, now {new!r}); "
            "resume it with the same recipe, model and options, or choose another --out"
        )
    return manifest


def _only_more_attempts(previous: dict | None, recipe: Recipe) -> bool:
    """Whether `recipe` is the `previous` recipe (as the manifest recorded it) with `max_attempts` kept or raised."""
    if not previous:
        return False
    current = recipe.to_dict()
    before, now = previous.get("generation", {}).get("max_attempts"), current["generation"]["max_attempts"]

    def strip(r: dict) -> dict:
        return {**r, "generation": {k: v for k, v in r.get("generation", {}).items() if k != "max_attempts"}}

    return isinstance(before, int) and now >= before and strip(previous) == strip(current)


def acquire_lock(out: Path):
    """The run's lock, held by the main process for the whole run; None if another run holds it."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(out / STATE_DIR / "lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return None
    return lock
