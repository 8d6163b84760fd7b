"""Children and failed proposals, written to git: the one writer of the mutation and failure notes.

A child is a commit with the reasoning as body and Darwin-* trailers, a JSON note under the mutation
ref, then its branch (objects first, then the ref). A proposal that never becomes a child is a JSON
line on its parent under the failures ref: failures are kept, not dropped.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import git, population
from .config import Config
from .operators import Proposal


@dataclass
class Child:
    name: str  # branch short name: darwin/<name>
    sha: str
    parents: list[str]
    operator: str
    title: str


def commit_child(repo: Path, cfg: Config, name: str, tree: str, parents: list[str], title: str,
                 reasoning: str, trailers: dict[str, str], note: dict) -> Child:
    """Write the commit and its mutation note, then create the branch (create-only: no duplicates)."""
    sha = git.commit_tree(repo, tree, parents, git.commit_message(title, reasoning, trailers))
    git.note_set_json(repo, cfg.notes.mutation, sha, note)
    population.create(repo, name, sha, f"darwin-git: {trailers.get('Darwin-Operator')}")
    return Child(name, sha, parents, trailers.get("Darwin-Operator", ""), title)


def mutation_note(proposal: Proposal, generation: int, author: str, target: str) -> dict:
    return {
        "operator": proposal.operator, "model": proposal.model, "prompt_sha256": proposal.prompt_digest,
        "reasoning": proposal.reasoning, "title": proposal.title, "usage": proposal.usage,
        "cost_usd": proposal.usage.get("cost_usd", 0.0), "generation": generation,
        "author": author, "target": target, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    } | ({"choice": proposal.choice} if proposal.choice else {})


def record_failure(repo: Path, cfg: Config, parent: str, generation: int, slot: int, reason: str,
                   operator: str, patch: str = "", title: str = "", usage: dict | None = None) -> None:
    """Failures are kept, not dropped: a JSON line on the parent under the failures notes ref."""
    git.note_append_jsonl(repo, cfg.notes.failures, parent, {
        "generation": generation, "slot": slot, "reason": reason, "operator": operator, "title": title,
        "usage": usage or {}, "cost_usd": (usage or {}).get("cost_usd", 0.0),
        "patch": patch, "patch_sha256": hashlib.sha256(patch.encode()).hexdigest() if patch else "",
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    })


FAILURE = {"generation": (int,), "slot": (int,), "reason": (str,)}  # what readers of failures rely on


@dataclass(frozen=True)
class Failure:
    """A proposal that never became a child, with what it cost and the patch it was."""

    generation: int
    slot: int
    reason: str
    parent: str  # the commit the note is on: the slot's target
    operator: str = ""
    title: str = ""
    patch: str = ""
    usage: dict = field(default_factory=dict)
    cost_usd: float = 0.0


def failures(repo: Path, cfg: Config) -> list[Failure]:
    """Every recorded failure, in two git calls; a line that is not one is a one-line error naming it."""
    ref, rows, dropped = cfg.notes.failures, [], " (the failed proposals it records are forgotten)"
    for parent, text in git.notes_all(repo, ref).items():
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            row, problem = git.json_object(line, FAILURE)
            if problem:
                raise git.corrupt_note(ref, parent, f"line {number} {problem}", dropped)
            try:
                rows.append(git.typed(Failure, {**row, "parent": parent}))
            except ValueError as e:
                raise git.corrupt_note(ref, parent, f"line {number} is not a failure record ({e})", dropped) from None
    return rows
