"""Where a fine-tuning run writes: the output folder (empty, or this same run when resuming), the training state
folder beside it (`--checkpoint-dir`) with the lock held for the whole run, and the checkpoints a resume starts from.
See `train.py`'s docstring for both folders' layout."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from ..errors import OutputError
from ..paths import portable_reference

logger = logging.getLogger(__name__)

CONFIG_FILE = "finetune_config.json"
STATE_SUFFIX = ".checkpoints"  # the default training state folder: DIR.checkpoints beside DIR
LOCK_FILE = "lock"
LEGACY_STATE_DIR = ".skinsynth"  # where versions before issue 21 kept the lock, checkpoints/ and init/ inside DIR
KEEP_CHECKPOINTS = 2
TRAINER_STATE = "trainer_state.json"
INIT_DIR = "init"  # in the state folder: the random-weight pipeline a scratch run starts from


def default_checkpoint_dir(out: Path) -> Path:
    """`DIR.checkpoints` beside the output folder `DIR`: found again by `--resume` without being told, and outside
    what an upload of DIR sends."""
    out = Path(os.path.abspath(out))
    return out.with_name(out.name + STATE_SUFFIX)


def check_output(out: Path, state: Path, identity: dict, resume: bool) -> None:
    """Check that `out` is empty, or holds this same run when resuming. A new run also needs a state folder without
    another run's checkpoints (they would be resumed later)."""
    config_path = out / CONFIG_FILE
    if config_path.is_file():
        if not resume:
            raise OutputError(f"`{out}` holds a fine-tuning run already; pass --resume to continue it, or choose another --out")
        previous = _relative_paths(json.loads(config_path.read_text(encoding="utf-8")).get("identity", {}), out)
        for key in sorted(set(previous) | set(identity)):
            if previous.get(key) != identity.get(key):
                raise OutputError(f"`{out}` holds a run with another {key} ({previous.get(key)!r}, now {identity.get(key)!r}); resume it with the same options, or choose another --out")
        return
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OutputError(f"`{out}` exists and is not an empty folder; choose a new --out")
    if state.exists() and (not state.is_dir() or any(entry.name != LOCK_FILE for entry in state.iterdir())):
        raise OutputError(f"`--checkpoint-dir {state}` holds the training state of another run; delete it, or choose another --checkpoint-dir")


def _relative_paths(identity: dict, out: Path) -> dict:
    """A run's identity as older versions recorded it (absolute paths of the base, the data and the architecture
    config) in today's terms, relative to `out`, so that their runs still resume."""
    def relative(value):
        return portable_reference(value, out) if isinstance(value, str) and os.path.isabs(value) else value

    hyperparameters = identity.get("hyperparameters") or {}
    return {**identity, "base_model": relative(identity.get("base_model")), "training_data": relative(identity.get("training_data")),
            "hyperparameters": {**hyperparameters, "config": relative(hyperparameters.get("config"))} if hyperparameters else hyperparameters}


def _adopt_legacy_state(out: Path, state: Path) -> None:
    """Move the checkpoints and scratch init that older versions kept in `out/.skinsynth/` into `state`, so the run
    resumes from them and `out` no longer holds pickles."""
    legacy = out / LEGACY_STATE_DIR
    if not legacy.is_dir():
        return
    for entry in [*(legacy / "checkpoints").glob("checkpoint-*"), legacy / INIT_DIR]:
        if entry.is_dir() and not (state / entry.name).exists():
            shutil.move(str(entry), str(state / entry.name))
    shutil.rmtree(legacy)
    logger.warning("moved the training state of `%s` from %s to %s", out, legacy, state)


def lock_output(accelerator, out: Path, state: Path, identity: dict, resume: bool) -> tuple[object, Path | None]:
    """Hold the run's lock (`state/lock`, main process) for the whole run, then check `out` and choose the checkpoint
    to resume from under it: a second run into the same folder is refused with exit code 2 on every process, even
    one that started after the first had checked, and a resume never starts from a checkpoint another run has since
    moved past. Returns the lock (None on other processes) and the checkpoint (the same on every process)."""
    lock, refusal, checkpoint, created = None, None, None, not state.exists()
    if accelerator.is_main_process:
        from filelock import FileLock, Timeout

        try:
            state.mkdir(parents=True, exist_ok=True)
            lock = FileLock(str(state / LOCK_FILE))
            lock.acquire(timeout=0)
            check_output(out, state, identity, resume)
            if resume:
                _adopt_legacy_state(out, state)
            checkpoint = latest_checkpoint(state)
            if resume and checkpoint is None and (out / CONFIG_FILE).is_file():
                logger.warning("no checkpoint of `%s` in %s: it starts again from step 0 (if the run used another --checkpoint-dir, pass it again)", out, state)
        except Timeout:
            lock, refusal = None, f"another `skinsynth finetune` is writing to `{out}`; wait for it or choose another --out"
        except OSError as err:
            refusal = f"cannot create `{state}`: {err.strerror or err}"
        except OutputError as err:
            refusal = str(err)
        if refusal is not None and lock is not None:
            lock.release()
            lock = None
            if created:  # a refused start leaves no trace
                shutil.rmtree(state, ignore_errors=True)
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        refusal, checkpoint = broadcast_object_list([refusal, checkpoint])
    if refusal is not None:
        raise OutputError(refusal)
    return lock, checkpoint


def latest_checkpoint(state: Path) -> Path | None:
    checkpoints = sorted(state.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    complete = [p for p in checkpoints if (p / TRAINER_STATE).is_file()]
    return complete[-1] if complete else None
