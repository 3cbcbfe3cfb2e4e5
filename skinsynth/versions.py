"""The versions of the libraries that make a dataset or a model, recorded in every manifest: they change pixels."""

from __future__ import annotations

import platform

from . import __version__


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": platform.python_version(), "skinsynth": __version__}
    for package in ("torch", "diffusers", "transformers", "datasets", "accelerate", "huggingface_hub", "peft", "safetensors"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            pass
    return versions
