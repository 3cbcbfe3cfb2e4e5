"""Dataset and model cards: what the Hub reads (YAML metadata) and what people read (how it was made, what it may be
used for, what it may not), rebuilt from the manifest, the data and the reports beside it.

The templates live in `cards/` (Jinja, rendered by huggingface_hub's `DatasetCard.from_template` and
`ModelCard.from_template`); the metadata is built with `DatasetCardData` plus the `dataset_info` and `configs`
blocks that `datasets` itself writes on `push_to_hub`. Counts come from the data files (only the label and
attribute columns are read), and nothing time- or machine-dependent is added, so a card rebuilt from the same
folder is byte for byte the same file.

The modules: `templates` (file names, rendering, citations), `summary` (counts read from the shards), `grid` (the
sample grid), `reports` (what other commands add), `provenance` (training data, licenses), `dataset` and `model`
(the two kinds of card). The names below are what the rest of skinsynth and users call.
"""

from .dataset import add_report, build_dataset_card, report_folder, write_dataset_card
from .model import write_model_card
from .reports import REPORTS, REPORTS_DIR
from .templates import CARD_FILE, GRID_FILE, templates_dir

__all__ = ["CARD_FILE", "GRID_FILE", "REPORTS", "REPORTS_DIR", "add_report", "build_dataset_card", "report_folder", "templates_dir",
           "write_dataset_card", "write_model_card"]
