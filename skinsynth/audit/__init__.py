"""Audits of a synthetic dataset: label-fidelity filtering, memorization of training patients, distribution quality.

Each audit takes images to features (`features`), compares feature sets exactly in bounded memory (`neighbors`,
`metrics`), and writes a JSON report plus pictures; `--update-card` puts the report into the dataset's card.
"""

from .filter import FilterConfig, ImageFilter, build_filter, filter_dataset
from .memorization import audit_memorization
from .quality import audit_quality

__all__ = ["FilterConfig", "ImageFilter", "audit_memorization", "audit_quality", "build_filter", "filter_dataset"]
