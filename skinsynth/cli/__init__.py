"""The `skinsynth` command line. Each command lives in its own module: it declares its arguments, calls one
public function of the library, and prints. Library errors (`SkinsynthError`) become one `error:` line and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from ..errors import SkinsynthError

# Module names under skinsynth.cli, in the order `skinsynth --help` lists them.
COMMANDS = ["prepare", "recipe_from", "finetune", "generate", "benchmark", "filter", "audit", "card", "verify", "push", "tiny_pipeline"]


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="skinsynth",
        description="Make fully synthetic, labeled skin-disease image datasets with diffusion models, publish them on the Hugging Face Hub, and measure what they are worth.",
        epilog="Run `skinsynth COMMAND --help` for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"skinsynth {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors, no progress bars")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f".{name}", __name__).register(subparsers)
    return parser


def _quiet_libraries(no_progress: bool) -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    if no_progress:  # the libraries' own loading bars too
        import datasets
        import diffusers.utils.logging
        import transformers.utils.logging

        datasets.disable_progress_bars()
        diffusers.utils.logging.disable_progress_bar()
        transformers.utils.logging.disable_progress_bar()
    import warnings

    warnings.filterwarnings("ignore", message=".*requires torchvision.*")
    warnings.filterwarnings("ignore", category=FutureWarning)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _quiet_libraries(no_progress=args.quiet)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    from tqdm.contrib.logging import logging_redirect_tqdm

    try:
        with logging_redirect_tqdm():
            return args.run(args) or 0
    except SkinsynthError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130
