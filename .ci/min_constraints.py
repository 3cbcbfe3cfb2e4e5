"""Print a pip constraints file that pins every declared dependency to its floor (`name>=X` becomes `name==X`).

CI installs the package under these constraints in a second venv and runs a smoke subset of the tests, so a floor in
pyproject.toml that the code has outgrown fails CI instead of a user's install. `torch` is left out: CI pins the
torch build itself (the CPU wheel), and the floors of the other packages are checked against it.
"""

import re
import sys
import tomllib
from pathlib import Path

SKIP = {"torch"}


def floors(pyproject: Path, extras: tuple[str, ...] = ("test",)) -> list[str]:
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    requirements = list(project["dependencies"])
    for extra in extras:
        requirements += project["optional-dependencies"][extra]
    pins = []
    for requirement in requirements:
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*>=\s*([0-9][0-9A-Za-z.]*)", requirement.strip())
        if match is None:
            sys.exit(f"{pyproject}: `{requirement}` has no plain `>=` floor; give every dependency one")
        name, version = match.groups()
        if name.lower() not in SKIP:
            pins.append(f"{name}=={version}")
    return pins


if __name__ == "__main__":
    root = Path(__file__).resolve().parent.parent
    print("\n".join(floors(root / "pyproject.toml")))
