"""The files the package ships: the genome template, the git hooks it installs, and the genome's
contract (GENOME.md) that every prompt quotes. (sandbox.package_dir is the package itself, for the jail.)"""
from __future__ import annotations

from pathlib import Path

from .errors import DarwinError


def asset_dir(name: str) -> Path:
    """genome/ and hooks/ ship inside the wheel, or sit beside the package in a source checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / name, here.parent / name):
        if candidate.is_dir():
            return candidate
    raise DarwinError(f"darwin-git is installed without its {name}/ folder; reinstall it")


def contract() -> str:
    """GENOME.md of the template: the one statement of what a genome may change and what the harness calls."""
    return (asset_dir("genome") / "GENOME.md").read_text()
