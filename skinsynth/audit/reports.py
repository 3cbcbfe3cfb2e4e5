"""Where audit results go: a JSON file and pictures in the audit's own output folder and, with `--update-card`,
the dataset's `reports/` folder, from which the card is rebuilt (`skinsynth.card.add_report`)."""

from __future__ import annotations

from pathlib import Path

from ..errors import OutputError


def prepare_output(out: str | Path) -> Path:
    """Create the audit's output folder (before any model loads), with one clear error if that is impossible."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create output folder `{out}`: {err.strerror or err}") from None
    return out
