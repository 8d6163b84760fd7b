"""Evaluate a population in parallel: jobs in, (job, record) pairs out as each evaluation ends.

Executors compute and nothing else: the driver (generation.py) writes every fitness note and
every ref, because concurrent notes writes lose notes (shared/GIT.md), and so that a kill of
the driver leaves git exactly as consistent as a sequential run would. Every backend runs the
same `evaluator.evaluate`, so a record depends on the backend only in its timings, device and
host. A worker that dies (its process killed, a Ray worker or node lost) gets one retry on the
next free slot; a second death is recorded as a crash, so a generation always completes.
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator

from rich.console import Console

from .. import git
from ..corpus import Corpus
from ..errors import DarwinError
from ..config import EXECUTORS, EvalSettings, ExecutorSettings
from ..evaluator import FitnessRecord, WorkerLost
from .display import SlotDisplay

@dataclass(frozen=True)
class Job:
    """One evaluation to run: the genome's name (for display), its commit, the seed, whether to score test,
    and whether to smoke it first (not for a re-run of a commit that already trained)."""

    name: str
    sha: str
    seed: int
    test: bool = True
    smoke: bool = True


@dataclass(frozen=True)
class Slot:
    """A place one evaluation runs at a time; `env` pins its genome processes (CUDA_VISIBLE_DEVICES) and
    `cores` are the CPU cores it owns (the compute box holds its genome processes to them; () for none)."""

    label: str
    env: dict[str, str] = field(default_factory=dict, hash=False)
    cores: tuple[int, ...] = ()


def pinned(settings: EvalSettings, seed: int) -> EvalSettings:
    """A job's settings: its seed, and "cuda:N" as plain "cuda", since a pinned slot sees one device."""
    device = "cuda" if settings.device.startswith("cuda") else settings.device
    return replace(settings, seed=seed, device=device)


def died_twice(repo: Path, job: Job, settings: EvalSettings, error: BaseException) -> dict:
    """The record of a job whose worker died on both tries: a crash, so it never survives selection."""
    return FitnessRecord(
        commit=job.sha, tree=git.tree_of(repo, job.sha), status="crashed", stage="worker", seed=job.seed,
        budget=settings.budget, device=settings.device, error=f"the worker died twice: {error}",
        time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    ).to_dict()


class Executor(ABC):
    """Runs jobs on `slots`, one per slot at a time; subclasses say how to start one and how to await any."""

    def __init__(self, slots: list[Slot]):
        self.slots = slots

    @abstractmethod
    def _start(self, repo: Path, job: Job, settings: EvalSettings, corpus: Corpus, slot: Slot) -> Any:
        """Begin evaluating `job` on `slot`; return a handle for `_wait`."""

    @abstractmethod
    def _wait(self, handles: list[Any]) -> tuple[Any, dict | BaseException]:
        """Block until one handle is done; return it with its record dict, or the exception it ended with."""

    @abstractmethod
    def _cancel(self, handles: list[Any]) -> None:
        """Stop unfinished evaluations (the caller stopped listening, e.g. Ctrl-C): no genome outlives the driver."""

    def run(self, repo: Path, jobs: list[Job], settings: EvalSettings, corpus: Corpus,
            console: Console | None = None) -> Iterator[tuple[Job, dict]]:
        """Yield (job, record dict) for every job, in the order they finish."""
        queue, free, running = deque(jobs), list(self.slots), {}
        deaths: dict[Job, int] = {}
        with SlotDisplay(console, self.slots, len(jobs)) as display:
            try:
                while queue or running:
                    while queue and free:
                        job, slot = queue.popleft(), free.pop(0)
                        running[self._start(repo, job, pinned(settings, job.seed), corpus, slot)] = (job, slot)
                        display.started(job, slot)
                    handle, outcome = self._wait(list(running))
                    job, slot = running.pop(handle)
                    free.append(slot)
                    display.idle(slot)
                    if isinstance(outcome, BaseException):
                        if isinstance(outcome, DarwinError) and not isinstance(outcome, WorkerLost):
                            raise outcome  # the user's to fix (a bad setting), the same on every retry
                        deaths[job] = deaths.get(job, 0) + 1
                        if deaths[job] < 2:
                            queue.appendleft(job)
                            continue
                        outcome = died_twice(repo, job, settings, outcome)
                    display.done()
                    yield job, outcome
            finally:
                if running:
                    self._cancel(list(running))


def executor_for(settings: ExecutorSettings, evaluation: EvalSettings) -> Executor:
    """The executor darwin.toml (and the command line) ask for; one-line errors for impossible requests."""
    if settings.kind not in EXECUTORS:
        raise DarwinError(f"executor {settings.kind!r} is unknown; use one of {', '.join(EXECUTORS)}")
    if settings.slots < 0 or settings.per_device < 1:
        raise DarwinError("[executor] slots must be 0 (automatic) or more and per_device 1 or more")
    if settings.kind == "ray":
        try:
            from .ray import RayExecutor
        except ImportError:
            raise DarwinError("the ray executor needs Ray: pip install 'darwin-git[ray]'") from None
        return RayExecutor(settings, evaluation)
    from .local import LocalExecutor

    return LocalExecutor.for_device(settings, evaluation.device, evaluation.threads)
