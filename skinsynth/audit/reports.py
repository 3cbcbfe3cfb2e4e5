"""Where audit results go: a JSON file in the audit's own output folder and, with `--update-card`, into the
dataset's `reports/` folder, from which `skinsynth card` rebuilds the dataset card."""

from __future__ import annotations

import logging
from pathlib import Path

from ..errors import OutputError, SkinsynthError
from ..shards import atomic_write_json

logger = logging.getLogger(__name__)

REPORTS_DIR = "reports"


def prepare_output(out: str | Path) -> Path:
    """Create the audit's output folder (before any model loads), with one clear error if that is impossible."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create output folder `{out}`: {err.strerror or err}") from None
    return out


def local_dataset(dataset: str | Path, option: str = "--update-card") -> Path:
    """The dataset's folder, for options that write into it (a Hub id cannot be updated in place)."""
    path = Path(dataset).expanduser()
    if not path.is_dir():
        raise SkinsynthError(f"`{option}` writes into the dataset folder, but `{dataset}` is not a local folder; download it first or drop {option}")
    return path


def update_card(dataset: str | Path, name: str, report: dict) -> Path:
    """Write `report` to DATASET/reports/NAME and rebuild the dataset card from everything the folder holds."""
    path = local_dataset(dataset) / REPORTS_DIR / name
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, report)
    try:
        from ..card import write_dataset_card
    except ImportError:
        logger.warning("wrote %s; this skinsynth has no card builder, run `skinsynth card %s` once it does", path, dataset)
        return path
    write_dataset_card(Path(dataset))
    return path
