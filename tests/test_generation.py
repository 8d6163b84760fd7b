"""Whole generations on real repos: failed offspring, crossover conflicts, a real SIGKILL, the lock, noise."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, replace

import pytest

from darwin_git import breeding, config, memory
from darwin_git.generation import Generation, genomes
from darwin_git.git import lock, typed
from darwin_git.operators import Proposal
from darwin_git.population import Plan, init_repo
from darwin_git.selection import Genome, within_noise

from .conftest import clone_repo, darwin_refs, evo_config, generation_doc, git, note, quiet

LIVE, ARCHIVE = "refs/heads/darwin/", "refs/darwin/archive/"
CLI = [sys.executable, "-c", "from darwin_git.cli import main; main()"]


class ScriptedLlm:
    """A test double for an LLM operator: replies with the given patches, one per call, in order."""

    name = "scripted"

    def __init__(self, patches: list[str]):
        self.patches, self.calls = patches, 0

    def digest(self, evidence, previous):
        return None

    def usage(self):
        return {}

    def resume(self, spent):
        pass

    def propose(self, files, context, rng, check=None) -> Proposal:
        assert {"train.py", "model.py"} <= set(files)
        patch = self.patches[self.calls]
        self.calls += 1
        return Proposal(title=f"Scripted change {self.calls}", reasoning="Scripted for a test.", patch=patch,
                        operator="scripted", model="script-1")


def test_rejected_proposals_are_recorded_and_the_generation_completes(baseline_repo, tmp_path):
    repo = clone_repo(baseline_repo, tmp_path / "evo")
    root = git(repo, "rev-parse", "darwin/ada").strip()
    settings = git(repo, "show", f"{root}:darwin.toml")
    cheat = ("diff --git a/darwin.toml b/darwin.toml\n--- a/darwin.toml\n+++ b/darwin.toml\n@@ -1 +1 @@\n"
             f"-{settings.splitlines()[0]}\n+# mine now\n")
    llm = ScriptedLlm(["Sure! Here is my improved training loop, it should be much better.\n", cheat])
    summary = Generation(repo, config.load(repo), quiet(), operator=llm).run()
    assert llm.calls == 2

    records = [json.loads(line) for line in note(repo, "failures", root).splitlines()]
    assert [(r["generation"], r["slot"], r["operator"]) for r in records] == [(1, 0, "scripted"), (1, 1, "scripted")]
    assert "malformed" in records[0]["reason"] and records[0]["patch"] == llm.patches[0]
    assert "evaluator owns" in records[1]["reason"] and records[1]["patch"] == cheat
    assert set(darwin_refs(repo, LIVE)) == {"ada", "bo"} and darwin_refs(repo, ARCHIVE) == {}
    recorded = generation_doc(repo, 1, "summary")
    assert recorded["failures"] == [asdict(f) for f in summary.failures] and len(recorded["failures"]) == 2
    assert {s["name"] for s in recorded["survivors"]} == {"ada", "bo"}


def test_crossover_conflict_in_a_generation_is_a_recorded_failure(tmp_path, corpus_file):
    repo = tmp_path / "evo"
    cfg = evo_config(corpus_file)
    init_repo(repo, cfg)
    for name, value in (("ada", "5"), ("bo", "3")):
        git(repo, "checkout", "-q", f"darwin/{name}")
        (repo / "train.py").write_text((repo / "train.py").read_text().replace("n_layer = 4", f"n_layer = {value}"))
        git(repo, "commit", "-qam", f"n_layer = {value}")
    git(repo, "checkout", "-q", "main")
    live = darwin_refs(repo, LIVE)
    slot = {"slot": 0, "kind": "crossover", "child": "ada-g1-0",
            "parents": [{"name": "ada", "sha": live["ada"]}, {"name": "bo", "sha": live["bo"]}]}
    plan = typed(Plan, {"generation": 1, "population": live, "slots": [slot], "parents": {"ada-g1-0": live["ada"]}})
    generation = Generation(repo, cfg, quiet())
    assert generation._breed(1, plan, memory.history(repo, cfg)) == {}
    assert generation._breed(1, plan, memory.history(repo, cfg)) == {}  # a recorded failure is not tried again
    fails = breeding.failures(repo, cfg)
    assert len(fails) == 1 and fails[0].parent == live["ada"]
    assert (fails[0].generation, fails[0].slot, fails[0].operator) == (1, 0, "crossover")
    assert "conflict" in fails[0].reason and "train.py" in fails[0].reason
    assert darwin_refs(repo, LIVE) == live


def _children(repo) -> dict[str, str]:
    return {n: s for n, s in {**darwin_refs(repo, ARCHIVE), **darwin_refs(repo, LIVE)}.items() if "-g1-" in n}


def _scored(repo) -> dict[str, dict]:
    """{sha: fitness note} for every generation-1 child that has one."""
    listing = git(repo, "notes", "--ref", "refs/notes/darwin/fitness", "list")
    annotated = {line.split()[1] for line in listing.splitlines()}
    return {sha: json.loads(note(repo, "fitness", sha)) for sha in _children(repo).values() if sha in annotated}


def _commits_of_generation(repo, g: int) -> set[str]:
    """Every commit object in the repo (reachable or not) whose Darwin-Generation trailer is g."""
    objects = git(repo, "cat-file", "--batch-all-objects", "--batch-check=%(objectname) %(objecttype)")
    commits = [line.split()[0] for line in objects.splitlines() if line.endswith(" commit")]
    out = subprocess.run(["git", "-C", str(repo), "log", "--no-walk=unsorted", "--stdin",
                          "--format=%H %(trailers:key=Darwin-Generation,valueonly,separator=%x2C)"],
                         input="\n".join(commits) + "\n", capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.split()[1:] == [str(g)]}


@pytest.mark.parametrize("strategy", config.STRATEGIES)
def test_generation_resumes_after_sigkill_without_redoing_work(baseline_repo, tmp_path, strategy):
    repo = clone_repo(baseline_repo, tmp_path / "evo")
    cfg = config.load(repo)
    (repo / "darwin.toml").write_text(replace(cfg, evolution=replace(cfg.evolution, strategy=strategy)).to_toml())
    with open(tmp_path / "killed.log", "w") as log:
        proc = subprocess.Popen(CLI + ["generation"], cwd=repo, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            deadline = time.monotonic() + 180
            while not (before := _scored(repo)):
                assert proc.poll() is None, (tmp_path / "killed.log").read_text()
                assert time.monotonic() < deadline, "no child was evaluated in time"
                time.sleep(0.2)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # the whole group: the CLI and the git it runs
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert "g0001/summary.json" not in git(repo, "ls-tree", "-r", "--name-only", "refs/darwin/generations")

    result = subprocess.run(CLI + ["generation"], cwd=repo, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "resuming generation 1" in result.stdout

    plan, summary = generation_doc(repo, 1, "plan"), generation_doc(repo, 1, "summary")
    planned = {s["child"]: s["slot"] for s in plan["slots"]}
    children = _children(repo)
    failed = {(f.generation, f.slot) for f in breeding.failures(repo, config.load(repo))}
    for child, slot in planned.items():
        assert (child in children) != ((1, slot) in failed), child  # a branch or a failure, never both
    assert set(children) <= set(planned)
    assert set(darwin_refs(repo, LIVE)) | set(darwin_refs(repo, ARCHIVE)) <= set(planned) | {"ada", "bo"}
    assert _commits_of_generation(repo, 1) == set(children.values())
    assert len(set(children.values())) == len(children)
    assert set(summary["evaluated"]) == set(children) | {"ada", "bo"}

    after = _scored(repo)
    for sha, doc in before.items():
        assert after[sha]["runs"][0] == doc["runs"][0]  # evaluated before the kill: not trained again
    assert all(doc["status"] for doc in after.values()) and set(after) == set(children.values())


def test_second_generation_process_is_refused(tmp_path, corpus_file):
    repo = tmp_path / "evo"
    init_repo(repo, evo_config(corpus_file))
    with lock(repo, "generation.lock", wait=False):
        proc = subprocess.run(CLI + ["generation"], cwd=repo, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "another darwin-git process" in lines[0]
    assert git(repo, "for-each-ref", "refs/darwin/", "refs/notes/") == ""  # nothing was started


def test_survivors_are_measured_on_two_seeds(evolved_repo):
    summary = generation_doc(evolved_repo, 1, "summary")
    assert len(summary["survivors"]) == 2
    for survivor in summary["survivors"]:
        doc = json.loads(note(evolved_repo, "fitness", survivor["sha"]))
        scores = [r["val_bpb"] for r in doc["runs"]]
        assert doc["status"] == "ok" and doc["n"] == 2 == len({r["seed"] for r in doc["runs"]})
        assert doc["fitness"] == survivor["fitness"] == round(statistics.fmean(scores), 6)
        assert doc["spread"] == survivor["spread"] == round(statistics.stdev(scores), 6) > 0
        # test is scored by the confirmation run alone, and never feeds the fitness
        assert [r["test_bpb"] is not None for r in doc["runs"]] == [False, True] and doc["test_n"] == 1
        # the confirmation re-runs a commit that already trained: no check or smoke stage again
        assert ["smoke" in r["stage_s"] for r in doc["runs"]] == [True, False]
        seen = genomes(evolved_repo, config.load(evolved_repo), {survivor["name"]: survivor["sha"]})[survivor["name"]]
        assert seen.by_seed == tuple((r["seed"], r["val_bpb"]) for r in doc["runs"])  # what a paired test reads


@pytest.mark.parametrize("a, b, close", [
    (Genome("a", "1", 3.00, 0.05, 2, "ok"), Genome("b", "2", 3.05, 0.04, 2, "ok"), True),
    (Genome("a", "1", 3.00, 0.01, 2, "ok"), Genome("b", "2", 3.50, 0.02, 3, "ok"), False),
    (Genome("a", "1", 3.00, 0.0, 1, "ok"), Genome("b", "2", 3.50, 0.0, 1, "ok"), True),  # no spread known yet
    (Genome("a", "1", 3.00, 0.0, 2, "ok"), Genome("b", "2", None, 0.0, 1, "crashed"), False),
])
def test_within_noise(a, b, close):
    assert within_noise(a, b) is close and within_noise(b, a) is close
