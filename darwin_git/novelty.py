"""The novelty gate: a child is trained only when its change is new to the search.

A change's signature is the set of lines it adds and removes, per file, whitespace-normalised:
the same edit made on two different parents (other line numbers, other context) has one
signature, and its revert has the signature with the signs swapped. Before a child is trained
the gate refuses a change that is already in its lineage, one that reverts a change its lineage
kept, and one that repeats a change that was pruned or failed anywhere in the population: the
search has paid for that lesson once. Built from the history memory.py reads and the diffs of its
commits (one git process), so it needs no record of its own.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from unidiff import PatchSet
from unidiff.errors import UnidiffParseError

from . import git

Signature = frozenset[tuple[str, str, str]]  # (path, "+" or "-", line with whitespace collapsed)


def signature(patch: str) -> Signature:
    """What a patch adds and removes, wherever it applies; empty for text that is not a diff."""
    try:
        files = PatchSet(patch)
    except UnidiffParseError:
        return frozenset()
    return frozenset((f.path, line.line_type, " ".join(line.value.split()))
                     for f in files for hunk in f for line in hunk if line.line_type in "+-" and line.value.strip())


@dataclass(frozen=True)
class Known:
    """A change the search has made: a commit, its first parent, and what became of it."""

    sha: str
    parent: str
    name: str
    title: str
    lost: str  # "failed", "was pruned", or "" while it lives or waits for its score


def inverse(sig: Signature) -> Signature:
    return frozenset((path, "-" if sign == "+" else "+", text) for path, sign, text in sig)


class Gate:
    """The verdict on a child's change before it is trained: None, or why it is not new."""

    def __init__(self, repo: Path, known: list[Known]):
        self.repo = repo
        self.changes = {c.sha: c for c in known}
        patches = git.diffs(repo, [(c.sha, c.parent) for c in self.changes.values()])
        self.signatures = {sha: signature(p) for sha, p in patches.items()}

    def lineage(self, sha: str) -> list[Known]:
        """The changes that made `sha`, newest first (first parents)."""
        out = []
        while sha in self.changes and len(out) < len(self.changes):
            out.append(self.changes[sha])
            sha = self.changes[sha].parent
        return out

    def verdict(self, parent: str, tree: str) -> str | None:
        sig = signature(git.diff(self.repo, parent, tree))
        if not sig:
            return None
        for c in self.lineage(parent):
            if self.signatures.get(c.sha) == sig:
                return f"not new: {c.name} ({c.sha[:10]}) in this lineage already made this change"
            if self.signatures.get(c.sha) == inverse(sig):
                return f"not new: it reverts {c.name}'s kept change {c.title!r}"
        for c in self.changes.values():
            if c.lost and self.signatures.get(c.sha) == sig:
                return f"not new: {c.name} made this change and {c.lost}"
        return None
