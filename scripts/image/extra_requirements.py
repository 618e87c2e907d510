"""Prints the requirements of ortserve and the given extras, one a line, read from pyproject.toml alone.

The Dockerfile installs them before the wheel, so that a change to the code or the README rebuilds only the layer
that installs the wheel (`--no-deps`), not the dependencies. Self-references (`ortserve[server-slim]`) are expanded.
Usage: python extra_requirements.py PYPROJECT EXTRA [EXTRA ...]
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator

import tomllib


def requirements(project: dict, names: list[str], seen: set[str]) -> Iterator[str]:
    for name in names:
        if name in seen:
            continue
        seen.add(name)
        for requirement in project["optional-dependencies"][name]:
            own = re.fullmatch(rf"{project['name']}\[([\w,-]+)\]", requirement)
            yield from requirements(project, own[1].split(","), seen) if own else [requirement]


if __name__ == "__main__":
    with open(sys.argv[1], "rb") as file:
        project = tomllib.load(file)["project"]
    print("\n".join([*project["dependencies"], *requirements(project, sys.argv[2:], set())]))
