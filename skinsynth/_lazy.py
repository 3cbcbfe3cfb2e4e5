"""Public names that load on first use, so that `skinsynth --help` and a refused option or recipe answer before
torch, diffusers, transformers and datasets are imported (seconds): a package's `__init__` maps each public name
to the submodule defining it, and Python's module `__getattr__` (PEP 562) imports that submodule when the name is
first read."""

from __future__ import annotations

import importlib
import sys


def lazy_exports(package: str, exports: dict[str, str]):
    """`(__getattr__, __dir__)` for `package`, whose public name `n` is defined in its submodule `exports[n]`."""

    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{exports[name]}", package), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *exports})

    return __getattr__, __dir__
