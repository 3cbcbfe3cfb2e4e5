"""The `skinsynth` command line. Each command lives in its own module: it declares its arguments, calls one
public function of the library, and prints. Library errors (`SkinsynthError`) become one `error:` line and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import shlex
import signal
import sys
import threading

from ..errors import SkinsynthError

# Module names under skinsynth.cli, in the order `skinsynth --help` lists them.
COMMANDS = ["prepare", "recipe_from", "finetune", "generate", "benchmark", "filter", "audit", "card", "verify", "push", "tiny_pipeline"]


class _Parser(argparse.ArgumentParser):
    """An option argparse refuses is one `error:` line too (not the usage block), with where to look, and exit 2."""

    def error(self, message: str):
        self.exit(2, f"error: {_shorten(message)} (see `{self.prog} --help`)\n")


def _shorten(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = _Parser(
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
    if no_progress:  # the libraries' own loading bars too, through their environment switches: importing them here
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"  # would cost seconds before any input is checked
        os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] = "1"  # (transformers and skinsynth's pipeline loading follow the first)
        # A library imported before `main` ran (a Python caller, the tests) has read its switch already: tell it directly.
        if "huggingface_hub" in sys.modules:
            importlib.import_module("huggingface_hub.utils").disable_progress_bars()
        if "datasets" in sys.modules:
            importlib.import_module("datasets").disable_progress_bars()
        for library in ("diffusers", "transformers"):
            if library in sys.modules:
                importlib.import_module(f"{library}.utils.logging").disable_progress_bar()


class Terminated(BaseException):
    """SIGTERM, which batch schedulers send before they kill a job: unwinds like Ctrl-C (temporary files removed,
    locks released) so that the same command resumes."""


def _raise_terminated(signum, frame):
    raise Terminated


def recorded_command(argv: list[str]) -> str:
    """The command as a results file records it: as typed, except that absolute local paths are made relative to the
    directory it ran in, so that a file (or a card) that travels does not carry this machine's user and mount names."""

    def portable(arg: str) -> str:
        option, equals, value = arg.partition("=") if arg.startswith("--") else ("", "", arg)
        if os.path.isabs(value):
            try:
                value = os.path.relpath(value)
            except ValueError:  # another drive (Windows): no relative path; kept as typed
                pass
        return option + equals + value

    return shlex.join(["skinsynth", *map(portable, argv)])


def main(argv: list[str] | None = None) -> int:
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if in_main_thread else None
    try:
        return _main(argv)
    except SkinsynthError as err:
        print(f"error: {_shorten(err, 2000)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except Terminated:
        print("terminated; run the same command again to resume", file=sys.stderr)
        return 128 + signal.SIGTERM
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


def _main(argv: list[str] | None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.command_line = recorded_command(argv)
    _quiet_libraries(no_progress=args.quiet)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    from tqdm.contrib.logging import logging_redirect_tqdm

    with logging_redirect_tqdm():
        return args.run(args) or 0
