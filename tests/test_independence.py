"""The two packages stay independent: no imports, dependencies or files shared between them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import tomllib

PACKAGES = Path(__file__).resolve().parents[1] / "packages"
NAMES = {"bond_vae": "bond-vae", "pairwise_vae": "pairwise-vae"}


def imported_modules(source: Path) -> set[str]:
    """Top-level names of every module imported by a Python file."""
    tree = ast.parse(source.read_text(), filename=str(source))
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module.split(".")[0])
    return modules


def other(name: str) -> str:
    return next(n for n in NAMES if n != name)


@pytest.mark.parametrize("name", sorted(NAMES))
def test_sources_do_not_import_the_other_package(name):
    sources = sorted((PACKAGES / name).rglob("*.py"))
    assert sources, f"no sources found for {name}"
    for source in sources:
        assert other(name) not in imported_modules(source), f"{source} imports {other(name)}"
        text = source.read_text()
        assert f'importlib.import_module("{other(name)}' not in text and f'__import__("{other(name)}' not in text


@pytest.mark.parametrize("name", sorted(NAMES))
def test_pyproject_does_not_depend_on_the_other_package(name):
    project = tomllib.loads((PACKAGES / name / "pyproject.toml").read_text())
    requirements = (
        project["project"].get("dependencies", [])
        + [requirement for group in project.get("dependency-groups", {}).values() for requirement in group]
        + [
            requirement
            for extra in project["project"].get("optional-dependencies", {}).values()
            for requirement in extra
        ]
    )
    names = {
        requirement.split(";")[0].split("[")[0].split("=")[0].split(">")[0].split("<")[0].strip().lower()
        for requirement in requirements
    }
    assert NAMES[other(name)] not in names and other(name) not in names
    assert other(name) not in str(project.get("tool", {}).get("uv", {}).get("sources", {}))


def test_no_file_is_shared_or_linked_between_the_packages():
    """Each package owns its files: no symbolic or hard links, no build includes from outside.

    Files that happen to read alike are allowed: the packages are meant to evolve apart.
    """
    inodes = {}
    for name in NAMES:
        for path in (PACKAGES / name).rglob("*"):
            assert not path.is_symlink(), f"{path} is a symbolic link"
            if path.is_file() and "__pycache__" not in path.parts:
                inodes.setdefault((path.stat().st_dev, path.stat().st_ino), set()).add(name)
                assert path.stat().st_nlink == 1, f"{path} is hard-linked"
    assert all(len(owners) == 1 for owners in inodes.values())
    for name in NAMES:
        build = tomllib.loads((PACKAGES / name / "pyproject.toml").read_text()).get("tool", {}).get("hatch", {})
        assert ".." not in str(build) and other(name) not in str(build), f"{name} builds files from outside its folder"
