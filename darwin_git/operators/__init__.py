"""Variation operators: each turns a parent genome into a proposed change (a unified diff).

An operator never touches git; the harness validates, applies and commits what it returns.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Protocol


@dataclass
class Proposal:
    """What an operator proposes: a unified diff against the parent plus the reasoning behind it."""

    title: str  # commit subject: one line, imperative
    reasoning: str  # commit body: what changes, what it should do to test bpb, and why
    patch: str  # unified diff with a/ and b/ paths relative to the genome root
    operator: str  # e.g. "offline:rmsnorm" or "llm"
    model: str = ""  # the LLM that wrote it, "" for the offline catalogue
    usage: dict = field(default_factory=dict)  # prompt/completion tokens and cost, for LLMs
    prompt_digest: str = ""  # sha256 of the prompt, so the exact input can be matched later


class Operator(Protocol):
    def propose(self, files: dict[str, str], memory: str, inspiration: list[str],
                rng: random.Random) -> Proposal | None:
        """Return a change to `files` (path -> text of the parent genome), or None if nothing applies."""
