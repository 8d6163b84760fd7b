"""Fitness notes: every evaluation of a commit, plus the mean and spread selection uses.

Note layout under refs/notes/darwin/fitness (one JSON document per commit):
  {"fitness": mean test bpb over runs, "spread": sample std (0 for one run), "n": runs,
   "status": "ok" or the first failure, "runs": [FitnessRecord, ...]}
A genome that failed any run has fitness null: one crash is enough to never survive.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path

from . import git


def summarize(runs: list[dict]) -> dict:
    failed = next((r for r in runs if r["status"] != "ok"), None)
    scores = [r["test_bpb"] for r in runs if r["status"] == "ok"]
    return {
        "status": failed["status"] if failed else "ok",
        "fitness": None if failed or not scores else round(statistics.fmean(scores), 6),
        "spread": round(statistics.stdev(scores), 6) if len(scores) > 1 else 0.0,
        "n": len(runs),
        "runs": runs,
    }


def add_run(repo: Path, record: dict, ref: str) -> dict:
    """Append one evaluation to the commit's note (read-modify-write under the notes lock)."""
    with git.lock(repo, "notes.lock"):
        old = git.note_read(repo, ref, record["commit"])
        runs = json.loads(old)["runs"] if old else []
        runs = [r for r in runs if r.get("seed") != record.get("seed")] + [record]
        doc = summarize(runs)
        git.note_write(repo, ref, record["commit"], json.dumps(doc, sort_keys=True, indent=1) + "\n")
    return doc


def all_fitness(repo: Path, ref: str) -> dict[str, dict]:
    """{commit sha: fitness doc} for every evaluated commit, in two git processes."""
    return git.notes_json(repo, ref)
