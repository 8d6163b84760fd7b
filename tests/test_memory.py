"""Agent memory, inspiration and the population digest, read back from real git repos.

The histories here are written with the same calls a generation makes (commit_child, fitness
notes, failure notes, the generations log); only the scores are chosen by the test instead of
trained, so the trajectories are exact and the tests take seconds.
"""
from __future__ import annotations

import json
import random
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from darwin_git import breeding, fitness, memory, patches, population
from darwin_git.config import Config
from darwin_git.git import typed
from darwin_git.operators import OperatorError, Proposal, llm_tokens
from darwin_git.operators.llm import LlmOperator
from darwin_git.operators.offline import unified_diff
from darwin_git.population import Plan, init_repo

from .conftest import cli, evo_config, git
from .openai_stub import Endpoint


class History:
    """Builds a scored history in a fresh evolution repo: children, scores, failed attempts, plans."""

    def __init__(self, path: Path, corpus_file: Path):
        self.repo, self.cfg = path, evo_config(corpus_file)
        init_repo(path, self.cfg)
        self.root = git(path, "rev-parse", "darwin/ada").strip()
        self.score(self.root, 2.0)
        self.plans: dict[int, list[dict]] = {}

    def score(self, sha: str, bpb: float | None, error: str = "", seed: int = 1) -> None:
        status = "ok" if bpb is not None else "crashed"
        fitness.add_run(self.repo, {"commit": sha, "seed": seed, "status": status, "stage": "done" if bpb else "smoke",
                                    "val_bpb": bpb, "error": error}, self.cfg.notes.fitness)

    def child(self, parent: str, name: str, author: str, g: int, slot: int, title: str, knob: str,
              bpb: float | None, error: str = "") -> str:
        files = {"train.py": git(self.repo, "show", f"{parent}:train.py")}
        old = next(line for line in files["train.py"].splitlines() if line.startswith(knob.split(" =")[0] + " ="))
        patch = unified_diff(files, {"train.py": files["train.py"].replace(old + "\n", knob + "\n", 1)})
        tree = patches.apply(self.repo, parent, patch)
        agent = population.agent_of(name)
        proposal = Proposal(title, f"Reasoning for {title}.", patch, "llm", "stub-model",
                            {"prompt_tokens": 100, "completion_tokens": 20, "requests": 1, "cost_usd": 0.001})
        trailers = {"Darwin-Agent": agent, "Darwin-Author": author, "Darwin-Parent": parent, "Darwin-Operator": "llm",
                    "Darwin-Generation": str(g), "Darwin-Slot": str(slot)}
        sha = breeding.commit_child(self.repo, self.cfg, name, tree, [parent], title, proposal.reasoning, trailers,
                                    breeding.mutation_note(proposal, g, author, agent)).sha
        self.plans.setdefault(g, []).append({"slot": slot, "child": name, "author": author,
                                             "parents": [{"name": agent, "sha": parent}], "kind": "mutation"})
        if bpb is not None or error:
            self.score(sha, bpb, error)
        return sha

    def failed(self, parent: str, target: str, author: str, g: int, slot: int, reason: str) -> None:
        breeding.record_failure(self.repo, self.cfg, parent, g, slot, reason, "llm", "not a diff", "A failed idea")
        self.plans.setdefault(g, []).append({"slot": slot, "child": f"{target}-g{g}-{slot}", "author": author,
                                             "parents": [{"name": target, "sha": parent}], "kind": "mutation"})

    def record_plans(self) -> None:
        for g, slots in sorted(self.plans.items()):
            population.record_generation(self.repo, typed(Plan, {"generation": g, "population": {}, "slots": slots}),
                                         f"g{g} plan")


@pytest.fixture
def story(tmp_path, corpus_file) -> History:
    """ada improves, regresses, crashes and fails once; bo improves; ada also writes one change on bo's line."""
    h = History(tmp_path / "evo", corpus_file)
    a1 = h.child(h.root, "ada-g1-0", "ada", 1, 0, "Raise the learning rate", "learning_rate = 3e-3", 1.9)
    h.child(h.root, "bo-g1-1", "bo", 1, 1, "Halve the warmup", "warmup_steps = 25", 1.95)
    h.child(a1, "ada-g2-0", "ada", 2, 0, "Double the batch", "batch_size = 32", 2.05)
    h.child(a1, "ada-g2-1", "ada", 2, 1, "Deeper model", "n_layer = 6", None, "RuntimeError: boom in forward")
    h.failed(a1, "ada", "ada", 3, 0, "patch does not apply: error: train.py: patch does not apply")
    h.child(h.root, "bo-g3-1", "ada", 3, 1, "Lower beta2", "beta2 = 0.9", 1.97)
    h.record_plans()
    return h


def test_memory_is_the_authors_scored_trajectory_oldest_first(story):
    text = memory.agent_memory(story.repo, story.cfg, "ada")
    lines = [line for line in text.splitlines() if line.startswith("- ")]
    assert [line.split()[2] for line in lines] == ["ada-g1-0", "ada-g2-0", "ada-g2-1", "slot", "bo-g3-1"]
    assert "2.0000 -> 1.9000 bpb (-0.1000, noise not measured yet)" in lines[0]  # one run each: no verdict
    assert "Raise the learning rate" in lines[0] and "1.9000 -> 2.0500 bpb (+0.1500, " in lines[1]
    assert "crashed at smoke: RuntimeError: boom in forward" in lines[2]
    assert "FAILED before training: patch does not apply" in lines[3]
    assert "(on bo's lineage)" in lines[4] and "2.0000 -> 1.9700" in lines[4]
    assert "Reasoning for Raise the learning rate." in text  # from the mutation note
    assert "Halve the warmup" not in text  # bo's own change is bo's memory, not ada's
    assert "The template scored 2.0000" in text and llm_tokens.method() not in text
    bo = memory.agent_memory(story.repo, story.cfg, "bo")
    assert "Halve the warmup" in bo and "Lower beta2" not in bo


def test_memory_over_budget_keeps_the_best_the_worst_and_the_most_recent(tmp_path, corpus_file):
    h = History(tmp_path / "evo", corpus_file)
    scores = [1.99, 1.98, 1.7, 1.97, 1.96, 2.6, 1.95, 1.94, 1.93, 1.92, 1.91, 1.9]  # best: #2, worst: #5
    parent = h.root
    for g, bpb in enumerate(scores, 1):
        parent = h.child(parent, f"ada-g{g}-0", "ada", g, 0, f"Change number {g}", f"learning_rate = {g}e-3", bpb)
    full = memory.agent_memory(h.repo, h.cfg, "ada", budget_tokens=100_000)
    short = memory.agent_memory(h.repo, h.cfg, "ada", budget_tokens=llm_tokens.count(full) // 3)
    kept = [line.split()[2] for line in short.splitlines() if line.startswith("- ")]
    assert 3 <= len(kept) < len(scores)
    assert {"ada-g3-0", "ada-g6-0", "ada-g12-0"} <= set(kept)  # best, worst, most recent
    assert kept == sorted(kept, key=lambda n: int(n.split("-g")[1].split("-")[0]))  # still oldest first
    assert f"{len(scores) - len(kept)} of {len(scores)} entries are left out" in short


def _git_processes(fn) -> int:
    """How many git processes `fn` starts (every git call in darwin_git goes through subprocess.run)."""
    count, real = 0, subprocess.run

    def counting(args, *a, **kw):
        nonlocal count
        count += args[0] == "git"
        return real(args, *a, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(subprocess, "run", counting)
        fn()
    return count


def test_reads_are_batched_whatever_the_history_size(tmp_path, corpus_file):
    h = History(tmp_path / "evo", corpus_file)
    parent = h.root
    counts = []
    for g in range(1, 13):
        parent = h.child(parent, f"ada-g{g}-0", "ada", g, 0, f"Change {g}", f"learning_rate = {g}e-3", 2 - g / 100)
        if g in (2, 12):
            counts.append(_git_processes(lambda: memory.context(h.repo, h.cfg, "ada", memory.history(h.repo, h.cfg))))
    assert counts[0] == counts[1] <= 20


def test_inspiration_is_the_best_improvements_with_their_diffs(story):
    best = memory.inspiration(story.repo, story.cfg)
    assert [entry.splitlines()[0] for entry in best] == [
        "# Best change 1 in the population: Raise the learning rate",
        "# Best change 2 in the population: Halve the warmup",
        "# Best change 3 in the population: Lower beta2"]
    assert "2.0000 -> 1.9000 bpb (-0.1000)" in best[0]
    assert "-learning_rate = 2e-3\n+learning_rate = 3e-3" in best[0] and "```diff" in best[0]


def test_a_delta_is_better_or_worse_only_beyond_the_measured_noise(story):
    """Labels follow selection's own test: twice the combined seed spread, the population's typical
    spread standing in for a genome run once."""
    a1 = git(story.repo, "rev-parse", "darwin/ada-g1-0").strip()
    story.score(story.root, 2.02, seed=2)
    story.score(a1, 1.91, seed=2)  # root 2.01 ± 0.0141, a1 1.905 ± 0.0071: the bar is ±0.0316
    hist = memory.history(story.repo, story.cfg)
    assert hist.noise() == pytest.approx((0.014142 + 0.007071) / 2, abs=1e-5)
    change = {c.name: c for c in hist.changes}
    assert hist.verdict(change["ada-g1-0"]) == "better, beyond noise (±0.0316)"
    assert hist.verdict(replace(change["ada-g1-0"], after=1.99)) == "within noise (±0.0316)"
    assert hist.verdict(change["ada-g2-0"]).startswith("worse, beyond noise")  # 2.05 once, vs 1.905: typical spread
    text = memory.agent_memory(story.repo, story.cfg, "ada")
    assert "2.0100 -> 1.9050 bpb (-0.1050, better, beyond noise (±0.0316))" in text


def test_offline_digest_is_a_commit_chain_refreshed_every_n_generations(story):
    cfg = story.cfg
    cfg.llm = replace(cfg.llm, digest_every=3)
    assert memory.population_digest(story.repo, cfg).endswith("(no digest yet: it is written once there is "
                                                              "fitness evidence)\n")
    assert memory.refresh_digest(story.repo, cfg, 4, memory.history(story.repo, cfg)) == "offline"
    digest = git(story.repo, "show", "refs/darwin/digest:digest.md")
    assert "Raise the learning rate: better in 1 of 1, best -0.1000 bpb" in digest
    assert "Double the batch: worst +0.1500 bpb" in digest
    assert "1x patch does not apply" in digest and "1x crashed at smoke" in digest
    assert memory.refresh_digest(story.repo, cfg, 5, memory.history(story.repo, cfg)) is None  # not due yet
    assert memory.refresh_digest(story.repo, cfg, 7, memory.history(story.repo, cfg)) == "offline"
    assert git(story.repo, "rev-list", "--count", "refs/darwin/digest").strip() == "2"
    assert "Darwin-Digest-Generation: 7" in git(story.repo, "log", "-1", "--format=%B", "refs/darwin/digest")
    inspiration = memory.context(story.repo, cfg, "ada", memory.history(story.repo, cfg)).inspiration
    latest = git(story.repo, "show", "refs/darwin/digest:digest.md")
    assert inspiration[0].startswith("# What worked in the population") and latest.strip() in inspiration[0]


def test_llm_digest_and_its_fallback_when_the_endpoint_fails(story):
    cfg: Config = story.cfg
    llm = replace(cfg.llm, model="stub-model", timeout_s=2.0, max_retries=0)
    with Endpoint([{"content": "- Worked: higher learning rate (-0.10 bpb)."}]) as endpoint:
        operator = LlmOperator(replace(llm, base_url=endpoint.url))
        assert memory.refresh_digest(story.repo, cfg, 5, memory.history(story.repo, cfg), operator.digest) == "llm"
    evidence = endpoint.messages(0)[1]["content"]
    assert "## Biggest improvements" in evidence and "-0.1000 Raise the learning rate" in evidence
    assert git(story.repo, "show", "refs/darwin/digest:digest.md") == "- Worked: higher learning rate (-0.10 bpb).\n"

    dead = LlmOperator(replace(llm, base_url="http://127.0.0.1:9/v1"))  # nothing listens on the discard port
    assert memory.refresh_digest(story.repo, cfg, 10, memory.history(story.repo, cfg), dead.digest) == "offline"
    log = git(story.repo, "log", "--format=%(trailers:key=Darwin-Digest-Source,valueonly)", "refs/darwin/digest")
    assert log.split() == ["offline", "llm"]


def test_what_a_digest_rewrite_cost_is_in_git_and_in_the_totals(story):
    """The digest call's tokens go into its commit's Darwin-Usage trailer and into status's total."""
    from darwin_git.report import llm_usage

    cfg: Config = story.cfg
    before = llm_usage(story.repo, cfg)
    with Endpoint([{"content": "- Worked: higher learning rate.", "usage": (700, 30)}]) as endpoint:
        operator = LlmOperator(replace(cfg.llm, model="stub-model", timeout_s=2.0, max_retries=0, base_url=endpoint.url))
        assert memory.refresh_digest(story.repo, cfg, 5, memory.history(story.repo, cfg), operator.digest,
                                     operator.usage) == "llm"
    assert memory.digest_usage(story.repo)[0] == (5, operator.usage())
    after, of5 = llm_usage(story.repo, cfg), llm_usage(story.repo, cfg, generation=5)
    assert after["prompt_tokens"] - before["prompt_tokens"] == 700 and after["requests"] - before["requests"] == 1
    assert of5["completion_tokens"] >= 30


def test_the_prompt_is_an_experiment_log_of_the_genome_it_changes(story):
    """Sent through the real client to a local endpoint: the parent's name and score with its spread, the
    lineage with noise-labelled deltas, what each kind of change did, failures with their stderr apart from the machinery's, what
    siblings already changed, the task's facts; within its size cap."""
    from darwin_git import brief
    from darwin_git.generation import Generation, genome_files

    a1 = git(story.repo, "rev-parse", "darwin/ada-g1-0").strip()
    story.score(story.root, 2.02, seed=2)
    story.score(a1, 1.91, seed=2)
    story.failed(a1, "ada", "ada", 3, 1, "cost cap reached: 3 requests sent this generation (max_requests = 3)")
    story.failed(a1, "ada", "ada", 2, 3, "crossover adds nothing: one parent already contains the other")
    cfg: Config = story.cfg
    hist = memory.history(story.repo, cfg)
    context = Generation(story.repo, cfg).context(3, 0, "ada-g1-0", a1, "ada", hist)
    with Endpoint([{"content": json.dumps({"title": "t", "reasoning": "r", "edits": "not a diff"})}] * 2) as endpoint:
        operator = LlmOperator(replace(cfg.llm, model="stub-model", base_url=endpoint.url, max_retries=0))
        try:
            operator.propose(genome_files(story.repo, a1), context, random.Random(0))
        except OperatorError:
            pass  # the reply is beside the point: the prompt is what was sent
    prompt = endpoint.messages(0)[1]["content"]
    assert prompt.startswith(f"# The genome to change: ada-g1-0 ({a1[:10]})\nval bpb 1.9050 ± 0.0071 over 2 runs")
    assert '- g1 [llm] "Raise the learning rate": 2.0100 -> 1.9050 -0.1050, better, beyond noise (±0.0316)' in prompt
    assert "Seeds alone move val bpb by about ±0.0106 here" in prompt
    assert "- bo-g1-1: val bpb 1.9500 (one run: spread not measured); its line differs by: \"Halve the warmup\"" in prompt
    assert "ada-g2-1 \"Deeper model\": crashed at smoke; stderr ends: RuntimeError: boom in forward" in prompt
    assert "patch does not apply" in prompt.split("# Recent failed changes")[1].split("# Failures of the machinery")[0]
    machinery = prompt.split("# Failures of the machinery")[1].split("\n# ")[0]
    assert "cost cap reached" in machinery and "crossover adds nothing" in machinery  # not the idea's fault
    assert "cost cap reached" not in memory.agent_memory(story.repo, cfg, "ada")  # not shown as the agent's idea
    kinds = prompt.split("# What each kind of change did here")[1].split("\n# ")[0].splitlines()[1:]
    assert kinds[0] == "- Raise the learning rate: -0.1050 mean over 1"  # best first
    assert kinds[-1] == "- Double the batch: +0.1450 mean over 1"  # worst last (its parent re-run)
    assert "# Already changed by siblings in this generation" in prompt and '"Lower beta2"' in prompt
    assert f"Corpus {cfg.evaluation.data} (char tokens, vocabulary " in prompt
    assert f"budget {cfg.evaluation.budget} per run" in prompt and "this child is in generation 3" in prompt
    assert f"memory limit {cfg.evaluation.memory_mb} MB" in prompt
    assert "# Its code\n\n## train.py" in prompt
    assert llm_tokens.count(context.brief) <= brief.BRIEF_TOKENS
    shown = cli("memory", "ada-g1-0", "--prompt", "-C", story.repo)
    assert shown.exit_code == 0, shown.output
    assert shown.output.startswith("## system\n\nYou improve a small GPT training script")
    assert "## user\n\n# The genome to change: ada-g1-0" in shown.output and "(the prompt is about " in shown.output
    for slot in range(2, 8):  # more failures than a small cap keeps
        story.failed(a1, "ada", "ada", 4, slot, f"patch does not apply: attempt {slot}")
    hist = memory.history(story.repo, cfg)
    target = brief.Target("ada-g1-0", a1, 3, {})
    full = brief.text(story.repo, cfg, hist, target)
    small = brief.text(story.repo, cfg, hist, target, limit=100)
    assert llm_tokens.count(small) < llm_tokens.count(full) and small.count("\n- g") < full.count("\n- g")
