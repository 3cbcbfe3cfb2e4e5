"""The card templates (`cards/`, Jinja) and what every card shares: the file names, the rendering of a section, a
Markdown table cell, and the citations."""

from __future__ import annotations

from pathlib import Path

CARD_FILE = "README.md"
GRID_FILE = "sample_grid.png"

AKROUT_2023 = """@inproceedings{akrout2023diffusion,
  title         = {Diffusion-based Data Augmentation for Skin Disease Classification: Impact Across Original Medical Datasets to Fully Synthetic Images},
  author        = {Akrout, Mohamed and Gyepesi, B{\\'a}lint and Holl{\\'o}, P{\\'e}ter and Po{\\'o}r, Adrienn and Kincs{\\H{o}}, Bl{\\'a}ga and Solis, Stephen and Cirone, Katrina and Kawahara, Jeremy and Slade, Dekker and Abid, Latif and Kov{\\'a}cs, M{\\'a}t{\\'e} and Fazekas, Istv{\\'a}n},
  booktitle     = {Deep Generative Models, DGM4MICCAI 2023},
  series        = {Lecture Notes in Computer Science},
  publisher     = {Springer},
  year          = {2023},
  eprint        = {2301.04802},
  archivePrefix = {arXiv}
}"""


def templates_dir() -> Path:
    """The card templates: `skinsynth/cards` in an installed wheel (pyproject maps the top-level `cards/` there),
    `cards/` beside the package in a source checkout."""
    package = Path(__file__).resolve().parent.parent
    installed = package / "cards"
    return installed if installed.is_dir() else package.parent / "cards"


def skinsynth_citation(version: str) -> str:
    return f"""@software{{skinsynth,
  title   = {{skinsynth: fully synthetic, labeled skin-disease image datasets with diffusion models}},
  author  = {{{{skinsynth contributors}}}},
  version = {{{version}}},
  note    = {{Implements Akrout et al., DGM4MICCAI 2023, arXiv:2301.04802}}
}}"""


def version() -> str:
    from .. import __version__

    return __version__


def cell(value) -> str:
    """A value as a Markdown table cell: pipes escaped, line breaks flattened, None as a dash."""
    return "—" if value is None else str(value).replace("|", "\\|").replace("\n", " ")


def render_section(name: str, **variables) -> str:
    """A card section from `cards/{name}.md`, rendered with the same Jinja defaults as `RepoCard.from_template`."""
    import jinja2

    return jinja2.Template((templates_dir() / f"{name}.md").read_text(encoding="utf-8")).render(**variables)
