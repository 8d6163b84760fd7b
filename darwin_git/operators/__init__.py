"""Variation operators: each turns a parent genome into a proposed change (a unified diff).

An operator never touches git; the harness validates, applies and commits what it returns.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable, Protocol

KINDS = ("data", "script", "restructure", "other")  # what a request may ask for
Check = Callable[[str], str | None]  # patch -> why it cannot become a commit, or None if it can


@dataclass
class RequestDraft:
    """Something only the people running the search can give (data, a reviewed change, a new
    structure); the harness files it as a request (darwin_git/review.py) and never waits for it."""

    kind: str  # one of KINDS
    title: str
    rationale: str  # why, citing the fitness evidence
    evidence: str = ""  # the numbers it rests on, in the operator's words
    patch: str = ""  # a change to review before it lands, against the same parent; "" for none


@dataclass
class Proposal:
    """What an operator proposes: a unified diff against the parent plus the reasoning behind it."""

    title: str  # commit subject: one line, imperative
    reasoning: str  # commit body: what changes, what it should do to val bpb, and why
    patch: str  # unified diff with a/ and b/ paths relative to the genome root
    operator: str  # e.g. "offline:rmsnorm" or "llm"
    model: str = ""  # the LLM that wrote it, "" for the offline catalogue
    usage: dict = field(default_factory=dict)  # prompt/completion tokens and cost, for LLMs
    prompt_digest: str = ""  # sha256 of the prompt, so the exact input can be matched later
    request: RequestDraft | None = None  # filed for review alongside the change, which is committed as usual


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
