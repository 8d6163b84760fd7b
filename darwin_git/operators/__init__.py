"""Variation operators: each turns a parent genome into a proposed change (a unified diff).

An operator never touches git; the harness validates, applies and commits what it returns.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable, Protocol

Check = Callable[[str], str | None]  # patch -> why it cannot become a commit, or None if it can


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


class OperatorError(Exception):
    """The operator could not propose (endpoint down, cost cap, unusable reply); the message is the
    recorded reason and `patch` whatever text it did get, kept with the failure."""

    def __init__(self, reason: str, patch: str = ""):
        super().__init__(reason)
        self.patch = patch


class Operator(Protocol):
    def propose(self, files: dict[str, str], memory: str, inspiration: list[str],
                rng: random.Random, check: Check | None = None) -> Proposal | None:
        """Return a change to `files` (path -> text of the parent genome), or None if nothing applies.

        `check(patch)` says whether a patch would become a commit, so an operator that can revise
        (an LLM) gets one chance to repair it; the harness validates the final proposal regardless.
        """
