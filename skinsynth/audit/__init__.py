"""Audits of a synthetic dataset: label fidelity and filtering, memorization of training patients, distribution quality.

Each audit takes images to features (`features`) or to keypoints (`keypoints`, the memorization audit's copy
detector), compares them in bounded memory (`neighbors`, `metrics`), and writes a JSON report plus pictures;
`--update-card` puts the report into the dataset's card.
"""

from .._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "FilterConfig": "filter",
    "KeypointConfig": "keypoints",
    "KeypointMatcher": "keypoints",
    "ImageFilter": "filter",
    "build_filter": "filter",
    "filter_dataset": "filter",
    "audit_fidelity": "fidelity",
    "audit_memorization": "memorization",
    "audit_quality": "quality",
})

__all__ = ["FilterConfig", "ImageFilter", "KeypointConfig", "KeypointMatcher", "audit_fidelity", "audit_memorization", "audit_quality", "build_filter", "filter_dataset"]
