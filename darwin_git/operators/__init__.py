"""Variation operators: each turns a parent genome into a proposed change (a unified diff).

An operator never touches git; the harness validates, applies and commits what it returns. What it
is shown of the search so far arrives as a Context: records, plus the same records rendered as text
for a model to read (memory.py renders both from one history).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable, Protocol

KINDS = ("data", "script", "restructure", "other")  # what a request may ask for
Check = Callable[[str], str | None]  # patch -> why it cannot become a commit, or None if it can
Smoke = Callable[[str], str | None]  # patch -> how its check and smoke stages failed, or None if it trains


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
    choice: dict = field(default_factory=dict)  # how the operator chose among its options (an LLM's model), kept in the note


@dataclass(frozen=True)
class Outcome:
    """One earlier change or failed attempt, as the harness scored it."""

    generation: int
    title: str
    delta: float | None  # child minus parent val bpb; None when it failed or is not scored yet
    failed: bool  # crashed, timed out or never became a commit
    operator: str = ""  # what wrote it: "offline:rmsnorm", "llm", "crossover"
    model: str = ""  # the LLM that wrote it
    cost_usd: float = 0.0  # what writing it cost
    tokens: int = 0  # prompt and completion tokens spent on it
    parent: str = ""  # the commit it changed


@dataclass
class Context:
    """What an operator sees besides the parent's code."""

    memory: str = ""  # the author's scored trajectory and request answers, as text (what a model reads)
    brief: str = ""  # the experiment log of the genome being changed (brief.py), as text
    inspiration: list[str] = field(default_factory=list)  # the digest, then the population's best changes
    tried: list[Outcome] = field(default_factory=list)  # the author's changes and attempts, oldest first
    observed: list[Outcome] = field(default_factory=list)  # every change in the population, any author (delta None: not scored)
    asked: list[int] = field(default_factory=list)  # generations in which the author filed a request
    smoke: Smoke | None = None  # the harness's smoke stage, for an operator that may test a patch before it is taken
    parent: str = ""  # the commit being changed


class OperatorError(Exception):
    """The operator could not propose (endpoint down, cost cap, unusable reply); the message is the
    recorded reason and `patch` whatever text it did get, kept with the failure."""

    def __init__(self, reason: str, patch: str = ""):
        super().__init__(reason)
        self.patch = patch


class Operator(Protocol):
    name: str  # what the Darwin-Operator trailer says of a failure before any proposal exists

    def propose(self, files: dict[str, str], context: Context, rng: random.Random,
                check: Check | None = None) -> Proposal | None:
        """Return a change to `files` (path -> text of the parent genome), or None if nothing applies.

        `check(patch)` says whether a patch would become a commit, so an operator that can revise
        (an LLM) gets one chance to repair it; the harness validates the final proposal regardless.
        """

    def digest(self, evidence: str, previous: str) -> str | None:
        """A rewrite of the population's "what worked" digest from the fitness evidence, or None to let
        the deterministic digest stand (raises OperatorError when a rewrite was tried and failed)."""

    def usage(self) -> dict[str, float]:
        """Tokens, requests and cost spent so far ({} for an operator that costs nothing)."""

    def resume(self, spent: dict[str, float]) -> None:
        """Count `spent` (what this generation's records say it already cost) against the caps."""
