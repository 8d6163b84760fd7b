"""Fitness notes: every evaluation of a commit, plus the mean and spread selection uses.

Note layout under refs/notes/darwin/fitness (one JSON document per commit):
  {"split": "val", "fitness": mean val bpb over runs (what selection uses), "spread": its sample std
   (0 for one run), "n": runs, "test": mean test bpb over the runs that scored it (never used by
   selection), "test_n": how many did, "status": "ok" or the first failure, "runs": [FitnessRecord, ...]}
A genome that failed any run has fitness null: one crash is enough to never survive.
Notes written before the three-way split (no "split" key) held the mean *test* bpb as fitness;
they are read by summarising their runs again, which carry both numbers, so fitness is val there too;
every note is read that way, so the runs, the note's evidence, are the one source of its summary.
"""
from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import git

SPLIT = "val"
NUMBER = (int, float)
SHAPE = {"fitness": (*NUMBER, type(None)), "spread": NUMBER, "n": (int,), "status": (str,), "runs": (list,)}
RUN = {"status": (str,)}  # and val_bpb / test_bpb, numbers or null, where present: what summarize reads
DROPPED = " (the commit is then evaluated again)"


@dataclass(frozen=True)
class FitnessDoc:
    """One commit's note: its runs (the evaluator's records, kept as written) and what selection reads."""

    status: str = ""  # "ok" or the first failure; "" before any run
    fitness: float | None = None
    spread: float = 0.0
    n: int = 0
    test: float | None = None
    test_n: int = 0
    runs: list[dict] = field(default_factory=list)
    split: str = SPLIT

    def text(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, indent=1) + "\n"

    @property
    def by_seed(self) -> tuple[tuple[int, float], ...]:
        """(seed, val bpb) of each run that scored: what a paired comparison reads."""
        return tuple((r.get("seed"), r["val_bpb"]) for r in _scored(self.runs))


UNEVALUATED = FitnessDoc()


def _scored(runs: list[dict]) -> list[dict]:
    """The good runs with a val score: what the fitness is the mean of."""
    return [r for r in runs if r["status"] == "ok" and r.get("val_bpb") is not None]


def summarize(runs: list[dict]) -> FitnessDoc:
    failed = next((r for r in runs if r["status"] != "ok"), None)
    scores = [r["val_bpb"] for r in _scored(runs)]
    tests = [r["test_bpb"] for r in runs if r["status"] == "ok" and r.get("test_bpb") is not None]
    return FitnessDoc(
        status=failed["status"] if failed else "ok",
        fitness=None if failed or not scores else round(statistics.fmean(scores), 6),
        spread=round(statistics.stdev(scores), 6) if len(scores) > 1 else 0.0,
        n=len(runs),
        test=None if failed or not tests else round(statistics.fmean(tests), 6),
        test_n=len(tests),
        runs=runs,
    )


def current(ref: str, sha: str, text: str) -> FitnessDoc:
    """A note as selection reads it, its summary rebuilt from its runs, or a one-line error naming the
    note and its repair when it is not what summarize writes."""
    doc, problem = git.json_object(text, SHAPE)
    problem = problem or next((f"has run {i} that is not an evaluation record (status, val_bpb, test_bpb)"
                               for i, run in enumerate(doc["runs"]) if not _is_run(run)), "")
    if problem:
        raise git.corrupt_note(ref, sha, problem, DROPPED)
    return summarize(doc["runs"])


def _is_run(run: object) -> bool:
    return isinstance(run, dict) and not git.shape(run, RUN) and all(
        isinstance(run.get(k), (*NUMBER, type(None))) and not isinstance(run.get(k), bool)
        for k in ("val_bpb", "test_bpb"))


def add_run(repo: Path, record: dict, ref: str) -> FitnessDoc:
    """Append one evaluation to the commit's note (read-modify-write under the notes lock)."""
    with git.lock(repo, "notes.lock"):
        old = git.note_read(repo, ref, record["commit"])
        runs = current(ref, record["commit"], old).runs if old else []
        runs = [r for r in runs if r.get("seed") != record.get("seed")] + [record]
        doc = summarize(runs)
        git.note_write(repo, ref, record["commit"], doc.text())
    return doc


def of(repo: Path, ref: str, sha: str) -> FitnessDoc:
    """One commit's fitness doc (UNEVALUATED before its first run)."""
    text = git.note_read(repo, ref, sha)
    return UNEVALUATED if text is None else current(ref, sha, text)


def all_fitness(repo: Path, ref: str) -> dict[str, FitnessDoc]:
    """{commit sha: fitness doc} for every evaluated commit, in two git processes, each checked."""
    return {sha: current(ref, sha, text) for sha, text in git.notes_all(repo, ref).items()}
