"""The reports other commands leave in a dataset's `reports/` folder (benchmark, fidelity, memorization, quality),
each rendered into its card section by `cards/{name}_section.md`."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import DatasetError
from .templates import cell, render_section

REPORTS_DIR = "reports"
REPORTS = ("benchmark", "fidelity", "memorization", "quality")  # reports/{name}.json -> cards/{name}_section.md, in this order


def read_reports(root: Path) -> dict[str, dict]:
    """The reports in `root/reports/` that other commands wrote (benchmark, fidelity, memorization, quality)."""
    reports = {}
    for name in REPORTS:
        path = root / REPORTS_DIR / f"{name}.json"
        if path.is_file():
            try:
                reports[name] = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as err:
                raise DatasetError(f"report {path} cannot be read: {err}; fix or remove it, then rebuild the card") from None
    return reports


def report_sections(reports: dict[str, dict], label_names: list[str]) -> str:
    """The card sections of the reports present, each followed by a blank line (empty when there are none)."""
    return "".join(render_section(f"{name}_section", report=report, label_names=label_names, cell=cell).strip() + "\n\n" for name, report in reports.items())
