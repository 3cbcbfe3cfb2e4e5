"""Make SCIN's one-row-per-case tables into one row per image, for `skinsynth prepare --format csv --mapping mappings/scin.yaml`.

    python dataset_scripts/scin_table.py ~/data/scin      # holds scin_cases.csv, scin_labels.csv and the images

SCIN describes a case (up to three photos) in `scin_cases.csv` and its dermatologist labels in `scin_labels.csv`.
This writes `scin_images.csv` beside them: case_id, image_path (relative to the folder), image_shot_type, condition
(the highest-weighted entry of `weighted_skin_condition_label`, empty when the case has none), fitzpatrick (the
first dermatologist's estimate), body_site (the one body part ticked, else `multiple`), sex, age_group (`18-29`).
"""

from __future__ import annotations

import ast
import csv
import sys
from pathlib import Path

FIELDS = ["case_id", "image_path", "image_shot_type", "condition", "fitzpatrick", "body_site", "sex", "age_group"]


def read_table(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def top_condition(weighted: str) -> str:
    """`{'Eczema': 0.67, 'Psoriasis': 0.33}` -> `Eczema` (ties: first by name); '' when there is no label."""
    weights = ast.literal_eval(weighted) if weighted.strip() else {}
    return min(weights, key=lambda c: (-weights[c], c)) if weights else ""


def body_site(case: dict) -> str:
    ticked = [column.removeprefix("body_parts_").replace("_", " ") for column, value in case.items()
              if column.startswith("body_parts_") and value.strip().upper() in ("YES", "TRUE", "1")]
    return ticked[0] if len(ticked) == 1 else ("multiple" if ticked else "")


def age_group(value: str) -> str:
    """`AGE_18_TO_29` -> `18-29`, `AGE_80_OR_ABOVE` -> `80+`."""
    parts = value.removeprefix("AGE_").split("_")
    if len(parts) == 3 and parts[1] == "TO":
        return f"{parts[0]}-{parts[2]}"
    if len(parts) == 3 and parts[1:] == ["OR", "ABOVE"]:
        return f"{parts[0]}+"
    return "" if value in ("", "AGE_UNKNOWN") else value


def image_path(folder: Path, path: str) -> str:
    """The image's path relative to `folder`: SCIN's paths start at the bucket root (`dataset/images/…`)."""
    candidates = [path, *(str(Path(*Path(path).parts[i:])) for i in range(1, len(Path(path).parts)))]
    return next((c for c in candidates if (folder / c).is_file()), str(Path("images") / Path(path).name))


def build(folder: Path) -> Path:
    labels = {row["case_id"]: row for row in read_table(folder / "scin_labels.csv")}
    rows = []
    for case in read_table(folder / "scin_cases.csv"):
        label = labels.get(case["case_id"], {})
        for k in (1, 2, 3):
            path = case.get(f"image_{k}_path", "").strip()
            if path:
                rows.append({
                    "case_id": case["case_id"],
                    "image_path": image_path(folder, path),
                    "image_shot_type": case.get(f"image_{k}_shot_type", ""),
                    "condition": top_condition(label.get("weighted_skin_condition_label", "")),
                    "fitzpatrick": label.get("dermatologist_fitzpatrick_skin_type_label_1", ""),
                    "body_site": body_site(case),
                    "sex": case.get("sex_at_birth", ""),
                    "age_group": age_group(case.get("age_group", "")),
                })
    out = folder / "scin_images.csv"
    with open(out, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    print(f"wrote {build(Path(sys.argv[1]).expanduser())}")
