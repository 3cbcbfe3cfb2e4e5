"""Private by default: no synthetic dataset reaches the Hub without a check for copies of the patient photos its
model was trained on, and its card says what was checked.

A dataset counts as checked when either
- it was generated with `generate --filter-copies` (every image was scored against the training images and remade
  when it was a near copy: the manifest's `copy_filter`), or
- `audit memorization --update-card` audited it (`reports/memorization.json`) and flagged no image, with no
  significant excess over the held-out false-positive rate;
and needs no check when its model saw no patient images: a pipeline that no one fine-tuned (no skinsynth_model.json,
no LoRA, no textual-inversion embeddings), such as the tiny test pipeline or a public base model.

`check_publishable` is `push`'s gate: it refuses anything else, naming the command that fixes it, unless the user
publishes it anyway with `--allow-unaudited`, which is recorded in the manifest (`privacy_override`) so the card says so.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import PrivacyError
from .paths import model_record_paths, resolved_from
from .shards import atomic_write_json, read_manifest

OVERRIDE = "privacy_override"  # manifest key written by `push --allow-unaudited`
COPY_FILTER, AUDIT, NO_PATIENT_IMAGES, UNCHECKED, REAL_IMAGES = "copy_filter", "audit", "no_patient_images", "unchecked", "real_images"


@dataclass(frozen=True)
class PrivacyStatus:
    """How a dataset was checked for copies (`kind`), why that is enough or not, and what fixes it."""

    kind: str
    reason: str  # one sentence for the card: why this is or is not enough
    problems: tuple[str, ...] = ()  # what stops `push`; empty when publishable
    fix: str = ""  # the command that would fix the problems

    @property
    def publishable(self) -> bool:
        return not self.problems


def fine_tuned_parts(model: dict) -> list[str]:
    """The parts of the generating model that were trained on someone's images, or may have been: skinsynth fine-tunes
    (they record their training data), and any LoRA or embeddings (whose training data is unknown without metadata)."""
    parts = ["pipeline"] if model.get("finetune") else []
    parts += ["LoRA"] if model.get("lora") else []
    parts += ["embeddings"] if model.get("embeddings") else []
    return parts


def privacy_status(root: str | Path, manifest: dict | None = None, memorization: dict | None = None) -> PrivacyStatus:
    """What the dataset folder `root` shows about copies of training images (see the module docstring)."""
    from .card.provenance import model_training_data
    from .card.reports import REPORTS_DIR, read_reports

    root = Path(root)
    if manifest is None:
        name, manifest = read_manifest(root)
        if name != "generation.json":
            return PrivacyStatus(REAL_IMAGES, "these are real images prepared from their source; its own terms say where they may be shared")
    if memorization is None:
        memorization = read_reports(root).get("memorization")
    model = manifest.get("model") or {}
    parts = fine_tuned_parts(model)
    trained_on = model_training_data(model_record_paths(model, resolved_from(root)))
    real = trained_on or "REAL"
    audit = f"skinsynth audit memorization {root} --train {real} --out {root}-memorization --update-card"
    if (copy_filter := manifest.get("copy_filter")) is not None:
        reason = f"every image was checked against the {copy_filter['num_train']} training images of `{copy_filter['real']}` while it was generated, and near copies were remade"
        if _other_data(copy_filter["real"], root, trained_on):
            return PrivacyStatus(COPY_FILTER, reason, (f"`generate --filter-copies` searched `{copy_filter['real']}`, but the model was trained on `{trained_on}`, "
                                                       "which is not the same folder or Hub id: a check against other images says nothing about copies of these",),
                                 f"generate it again with `--filter-copies {trained_on}` (a new --out)")
        return PrivacyStatus(COPY_FILTER, reason)
    if memorization is not None:
        rows = sum(split["num_rows"] for split in manifest.get("splits", {}).values())
        reason = f"`skinsynth audit memorization` compared every image with the {memorization.get('num_train')} training images of `{memorization.get('real')}`"
        stale = []  # the audit does not speak for this dataset and this model: run it again
        if memorization.get("num_synthetic") != rows:
            stale.append(f"the memorization audit in {root / 'reports'} saw {memorization.get('num_synthetic')} images and the dataset holds {rows}: it audited another dataset")
        if _other_data(memorization.get("real"), root / REPORTS_DIR, trained_on):
            stale.append(f"the memorization audit searched `{memorization.get('real')}`, but the model was trained on `{trained_on}`, "
                         "which is not the same folder or Hub id: a check against other images says nothing about copies of these")
        if stale:
            return PrivacyStatus(AUDIT, reason, tuple(stale), f"run `{audit}` again")
        problems = []
        if memorization.get("num_flagged"):
            problems.append(f"the memorization audit flags {memorization['num_flagged']} images as near copies of training images (listed in reports/memorization.json)")
        if (memorization.get("excess") or {}).get("significant"):
            problems.append(f"the memorization audit finds significantly more close images than new patients give: {memorization.get('verdict')}")
        fix = "generate it again with `skinsynth generate … --filter-copies` (a new --out), which remakes every near copy"
        return PrivacyStatus(AUDIT, reason, tuple(problems), fix if problems else "")
    if not parts:
        return PrivacyStatus(NO_PATIENT_IMAGES, f"the generating model `{model.get('model')}` was not fine-tuned (no skinsynth_model.json, no LoRA, no textual-inversion "
                                                "embeddings), so it has seen no patient images of a dataset you hold; what its authors trained it on is described on its own model card")
    trained = ", ".join(parts)
    return PrivacyStatus(UNCHECKED, f"the generating model's {trained} was trained on images ({real if real != 'REAL' else 'data not recorded'}) and nothing checked this dataset for copies of them",
                         (f"nothing checked `{root}` for copies of the images its model's {trained} was trained on",),
                         f"run `{audit}` (or generate it again with `skinsynth generate … --filter-copies`)")


def _other_data(searched: str | None, searched_from: Path, trained_on: str | None) -> bool:
    """Whether a copy check that searched `searched` (a Hub id, or a path relative to `searched_from`) searched other
    data than the model's training data; False when either cannot be told (a dataset no longer where it was)."""
    from .card.provenance import hub_id

    def place(reference: str | None, base: Path) -> str | None:
        if not reference:
            return None
        local = base / Path(reference).expanduser()
        return os.path.realpath(local) if local.exists() else hub_id(reference)

    searched_at, trained_at = place(searched, searched_from), place(trained_on, Path.cwd())
    return searched_at is not None and trained_at is not None and searched_at != trained_at


def check_publishable(root: str | Path, *, allow_unaudited: bool = False) -> PrivacyStatus:
    """`push`'s gate, before any request: a synthetic dataset must be checked for copies (module docstring), or be
    published with `allow_unaudited`, which is recorded in the manifest for the card. Raises `PrivacyError`."""
    root = Path(root)
    name, manifest = read_manifest(root)
    if name != "generation.json":
        return privacy_status(root)
    status = privacy_status(root, manifest)
    if not status.publishable and not allow_unaudited:
        raise PrivacyError(
            f"not pushing `{root}`: {'; '.join(status.problems)}. To fix it, {status.fix}; "
            "or publish it anyway with `skinsynth push … --allow-unaudited` (its card will say so)"
        )
    override = {"allow_unaudited": True, "problems": list(status.problems)} if not status.publishable else None
    if manifest.get(OVERRIDE) != override:  # recorded, or cleared once the dataset no longer needs it
        manifest = {key: value for key, value in manifest.items() if key != OVERRIDE} | ({OVERRIDE: override} if override else {})
        atomic_write_json(root / name, manifest)
    return status


def _percent(share: dict | None) -> str:
    """A measured share (`matching.share`) as "1.00% (95% CI 0.43–2.31%, 5/501)"."""
    if not share or share.get("value") is None:
        return "—"
    low, high = share["ci95"]
    return f"{100 * share['value']:.2f}% (95% CI {100 * low:.2f}–{100 * high:.2f}%, {share['count']}/{share['n']})"


def privacy_section(root: str | Path, manifest: dict, reports: dict, training_data_names: list[str]) -> str:
    """The synthetic card's Privacy section (`cards/privacy_section.md`): what was checked, with its figures, and what
    such a check does not catch; followed by a blank line."""
    from .card.templates import render_section

    memorization = reports.get("memorization")
    return render_section(
        "privacy_section", privacy=privacy_status(root, manifest, memorization), copy_filter=manifest.get("copy_filter"), memorization=memorization,
        override=manifest.get(OVERRIDE), training_data_names=training_data_names, percent=_percent,
    ).strip() + "\n\n"
