"""Requests reviewed like pull requests: filed by agents (a scripted LLM, the offline plateau rule) and
people, listed, reviewed, approved into living genomes or rejected, and answered through memory.

No training: repos are built with the calls a generation makes (plans, `Generation._breed`, commits,
fitness notes written by hand), and every outcome is checked with plain git.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
from dataclasses import replace

import pytest

from darwin_git import config, memory, patches, population, review
from darwin_git import git as plumbing
from darwin_git.generation import Generation
from darwin_git.git import typed
from darwin_git.operators import RequestDraft
from darwin_git.operators.offline import OfflineMutator, unified_diff
from darwin_git.population import Plan, Summary

from .conftest import assert_one_line_error, cli, evo_config, git, quiet
from .openai_stub import Endpoint
from .test_llm import HALVE_WARMUP, RAISE_LR, llm_config, operator
from .test_memory import History
from .test_mutation import attacks


@pytest.fixture
def story(tmp_path, corpus_file) -> History:
    """A fresh evolution repo (ada and bo on the template, scored 2.0 by hand)."""
    return History(tmp_path / "evo", corpus_file)


def requests_json(repo, *flags: str) -> list[dict]:
    result = cli("requests", "--json", *flags, "-C", repo)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def every_ref(repo) -> str:
    return git(repo, "for-each-ref", "--format=%(refname) %(objectname)")


def patch_file(repo, tmp_path, rev: str, old: str, new: str, name: str = "change.patch"):
    train = git(repo, "show", f"{rev}:train.py")
    assert old in train
    path = tmp_path / name
    path.write_text(unified_diff({"train.py": train}, {"train.py": train.replace(old, new, 1)}))
    return path


def breed_with_llm(story: History, replies: list[dict]) -> tuple[dict, list[dict]]:
    """Plan generation 1 with the LLM operator, one slot per reply, and breed it against the stub."""
    with Endpoint(replies) as endpoint:
        cfg = llm_config(story.repo, endpoint.url, offspring=len(replies))
        generation = Generation(story.repo, cfg, quiet(), operator=operator(cfg))
        plan = generation._plan(1)
        population.record_generation(story.repo, plan, "generation 1: plan")
        made = generation._breed(1, plan, memory.history(story.repo, cfg))
    return made, plan.slots


def test_llm_request_is_reviewed_approved_into_every_genome_and_answered_in_memory(story):
    repo = story.repo
    ask = {"kind": "script", "title": "Halve the warmup everywhere", "evidence": "template 2.0000 bpb",
           "rationale": "Warmup takes most of a 20-step budget; a person should check it before it lands.",
           "edits": HALVE_WARMUP}
    replies = [{"content": json.dumps({"reasoning": "Faster learning.", "title": "Raise the learning rate",
                                       "edits": RAISE_LR, "request": ask})},
               {"content": json.dumps({"reasoning": "Longer average.", "title": "Raise beta2", "request":
                                       "Could a person give this search a GPU?", "edits": [
                                           {"path": "train.py", "search": "beta2 = 0.95\n",
                                            "replace": "beta2 = 0.99\n"}]})}]
    made, slots = breed_with_llm(story, replies)
    assert len(made) == 2  # the changes themselves were committed as usual: a request never holds one back

    script, other = requests_json(repo)
    assert (script["id"], script["kind"], script["state"], script["via"]) == ("r1", "script", "open", "llm")
    assert (other["kind"], other["commit"], other["title"]) == ("other", "", "Could a person give this search a GPU?")
    assert script["agent"] == slots[0].author and script["evidence"]["fitness"] == 2.0
    assert script["evidence"]["cited"] == "template 2.0000 bpb" and script["origin"] == "g1/slot0"
    request_commit = git(repo, "rev-parse", "refs/darwin/requests/r1").strip()
    assert git(repo, "rev-parse", "refs/darwin/requests/r1^").strip() == script["base"] == slots[0].parents[0].sha
    assert script["commit"] == request_commit
    listing = cli("requests", "-C", repo).output.splitlines()
    assert [line.split()[:3] for line in listing] == [["r1", "open", "script"], ["r2", "open", "other"]]

    page = cli("review", "r1", "-C", repo)
    assert page.exit_code == 0, page.output
    assert "-warmup_steps = 50" in page.output and "+warmup_steps = 25" in page.output
    assert "1 file changed, 1 insertion(+), 1 deletion(-)" in page.output and "2.0000" in page.output
    mail = cli("review", "r1", "--patch", "-C", repo).output
    assert mail == git(repo, "format-patch", "-1", "--stdout", request_commit)
    assert "Subject: [PATCH] Halve the warmup everywhere" in mail

    living = population.living(repo)
    result = cli("approve", "r1", "--to", "all", "--by", "carol", "--reason", "worth a try", "-C", repo)
    assert result.exit_code == 0, result.output
    after = population.living(repo)
    assert set(after) == set(living)
    for branch, old in living.items():
        parents = git(repo, "log", "-1", "--format=%P", f"darwin/{branch}").split()
        assert parents[0] == old and len(parents) == 2, branch
        assert git(repo, "log", "-1", "--format=%s", f"darwin/{branch}").strip() == \
            "Merge request r1: Halve the warmup everywhere"
        train = git(repo, "show", f"darwin/{branch}:train.py")
        assert "\nwarmup_steps = 25\n" in train
        assert git(repo, "show", f"{old}:train.py").replace("warmup_steps = 50", "warmup_steps = 25") == train
    requester = slots[0].parents[0].name  # still at the request's base: the change itself is merged
    assert git(repo, "log", "-1", "--format=%P", f"darwin/{requester}").split()[1] == request_commit

    assert cli("reject", "r2", "--reason", "no GPUs this month", "--by", "dan", "-C", repo).exit_code == 0
    assert cli("comment", "r2", "ask again in June", "--by", "erin", "-C", repo).exit_code == 0
    for doc in (script, other):
        shown = cli("memory", doc["agent"], "-C", repo).output
        if doc is script:
            assert '- r1 (g1, script) "Halve the warmup everywhere": APPROVED by carol (merged into' in shown
            assert "scored like any change): worth a try" in shown
            lines = shown.splitlines()  # the child the merge moved past keeps its name and its life
            assert any(line.startswith(f'- g1 {slots[0].child} [llm] "Raise the learning rate"')
                       and line.endswith("; alive") for line in lines), shown
            assert f'- g2 {slots[0].child} [request] "Merge request r1: Halve the warmup everywhere"' in shown
        else:
            assert f'- r2 (g1, other) "{other["title"]}": REJECTED by dan: no GPUs this month' in shown
            assert "comment by erin: ask again in June" in shown
    log = git(repo, "log", "--format=%s", "refs/darwin/requests-log").splitlines()
    assert log[:2] == ["r2: comment by erin", "r2: rejected by dan"] and len(log) == 5


def test_offline_mutator_asks_for_data_once_after_a_plateau(story, tmp_path):
    repo, parent = story.repo, story.root
    for g in range(1, 7):  # six changes in a row, each worse than its parent
        parent = story.child(parent, f"ada-g{g}-0", "ada", g, 0, f"Change {g}", f"learning_rate = {g}e-3", 2 + g / 100)
    story.record_plans()
    slots = [{"slot": s, "kind": "mutation", "child": f"ada-g7-{s}", "author": "ada",
              "parents": [{"name": "ada-g6-0", "sha": parent}]} for s in (0, 1)]
    plan = typed(Plan, {"generation": 7, "population": population.living(repo), "slots": slots,
                        "parents": {s["child"]: parent for s in slots}})
    population.record_generation(repo, plan, "generation 7: plan")
    Generation(repo, story.cfg, quiet(), operator=OfflineMutator())._breed(7, plan, memory.history(repo, story.cfg))
    [doc] = requests_json(repo)  # slot 1 saw slot 0's request in ada's memory and did not ask again
    assert (doc["kind"], doc["agent"], doc["via"], doc["commit"]) == ("data", "ada", "offline", "")
    assert "+0.0100, +0.0100" in doc["evidence"]["cited"]
    assert '- r1 (g7, data) "More or different training text for this search": open' in \
        cli("memory", "ada", "-C", repo).output

    assert_one_line_error(cli("approve", "r1", "--to", "all", "-C", repo), "has no patch to merge")
    data = tmp_path / "more.txt"
    data.write_text("Now is the winter of our discontent\n")
    before = population.living(repo)
    result = cli("approve", "r1", "--data", data, "--by", "carol", "-C", repo)
    assert result.exit_code == 0 and "darwin-git init DIR --data" in result.output, result.output
    assert population.living(repo) == before  # a data request moves no genome, and the corpus stays
    [doc] = requests_json(repo, "--all")
    assert doc["events"][-1]["data"] == {"path": str(data), "bytes": data.stat().st_size,
                                         "sha256": hashlib.sha256(data.read_bytes()).hexdigest()}
    assert "APPROVED by carol (data file more.txt recorded for a new run)" in cli("memory", "ada", "-C", repo).output
    page = cli("review", "r1", "-C", repo).output
    assert "data file" in page and hashlib.sha256(data.read_bytes()).hexdigest() in page.replace("\n", "")
    assert requests_json(repo) == []


def test_conflicting_approval_moves_nothing_and_propose_works_from_a_file_and_a_branch(story, tmp_path):
    repo = story.repo
    story.child(story.root, "bo-g1-0", "bo", 1, 0, "Raise the learning rate", "learning_rate = 3e-3", 1.9)
    change = patch_file(repo, tmp_path, "darwin/ada", "learning_rate = 2e-3", "learning_rate = 4e-3")
    result = cli("propose", "--from", change, "--title", "Learning rate 4e-3", "--to", "ada", "--by", "alice",
                 "--rationale", "A person's hunch.", "-C", repo)
    assert result.exit_code == 0 and "filed r1" in result.output, result.output
    [doc] = requests_json(repo)
    assert (doc["agent"], doc["via"], doc["to"], doc["kind"]) == ("alice", "person", ["ada"], "script")

    refs = every_ref(repo)
    assert_one_line_error(cli("approve", "r1", "--to", "all", "-C", repo),
                          "conflicts with darwin/bo-g1-0: patch does not apply: patch failed: train.py:")
    assert "git apply --3way: conflict in train.py" in cli("approve", "r1", "--to", "all", "-C", repo).output
    assert every_ref(repo) == refs and requests_json(repo)[0]["state"] == "open"

    assert cli("approve", "r1", "--to", "ada", "--to", "bo", "-C", repo).exit_code == 0
    for branch in ("ada", "bo"):
        assert "\nlearning_rate = 4e-3\n" in git(repo, "show", f"darwin/{branch}:train.py")
        assert len(git(repo, "log", "-1", "--format=%P", f"darwin/{branch}").split()) == 2
    assert git(repo, "rev-parse", "darwin/bo-g1-0").strip() in refs  # untouched

    tree = patches.apply(repo, "darwin/bo-g1-0", patch_file(repo, tmp_path, "darwin/bo-g1-0", "batch_size = 16",
                                                             "batch_size = 8").read_text())
    mine = git(repo, "commit-tree", tree, "-p", "darwin/bo-g1-0", "-m", "Smaller batches").strip()
    git(repo, "branch", "mine", mine)
    result = cli("propose", "--from", "mine", "--title", "Smaller batches", "--to", "bo-g1-0", "-C", repo)
    assert result.exit_code == 0, result.output
    assert git(repo, "diff", "--stat", "darwin/bo-g1-0", "refs/darwin/requests/r2").count("|") == 1
    assert "+batch_size = 8" in cli("review", "r2", "-C", repo).output
    mail = tmp_path / "r2.patch"  # `review --patch` output goes back in as it came out
    mail.write_text(cli("review", "r2", "--patch", "-C", repo).output)
    assert cli("propose", "--from", mail, "--title", "Again", "--to", "bo-g1-0", "-C", repo).exit_code == 0
    trees = git(repo, "rev-parse", "refs/darwin/requests/r2^{tree}", "refs/darwin/requests/r3^{tree}").split()
    assert trees[0] == trees[1]


def test_bad_ids_malformed_patches_and_decided_requests_are_one_line_errors(story, tmp_path):
    repo = story.repo
    change = patch_file(repo, tmp_path, "darwin/ada", "warmup_steps = 50", "warmup_steps = 25")
    assert cli("propose", "--from", change, "--title", "Shorter warmup", "--to", "ada", "-C", repo).exit_code == 0
    for args, words in ((("review", "r9"), "no request 'r9'"), (("approve", "../x"), "no request '../x'"),
                        (("reject", "r9", "--reason", "no"), "no request 'r9'"),
                        (("comment", "r7", "hi"), "no request 'r7'")):
        assert_one_line_error(cli(*args, "-C", repo), words)
    garbage = tmp_path / "garbage.patch"
    garbage.write_text("Sure! Here is a better training loop.\n")
    cheat = tmp_path / "cheat.patch"
    cheat.write_text("--- a/darwin.toml\n+++ b/darwin.toml\n@@ -1 +1 @@\n-x\n+y\n")
    for source, words in ((garbage, "malformed patch"), (cheat, "which the evaluator owns"),
                          (tmp_path / "missing.patch", "neither a patch file nor a branch")):
        assert_one_line_error(cli("propose", "--from", source, "--title", "t", "--to", "ada", "-C", repo), words)
    assert_one_line_error(cli("propose", "--from", change, "--title", "t", "--to", "nobody", "-C", repo),
                          "--to must name one living genome")
    assert_one_line_error(cli("reject", "r1", "--reason", " ", "-C", repo), "needs --reason")
    assert cli("reject", "r1", "--reason", "not now", "-C", repo).exit_code == 0
    assert_one_line_error(cli("approve", "r1", "-C", repo), "request r1 was already rejected by test")
    assert len(requests_json(repo, "--all")) == 1


def test_a_genome_an_approval_moves_during_a_generation_is_not_pruned_by_it(story, tmp_path):
    repo, cfg = story.repo, story.cfg
    cfg.evolution = replace(cfg.evolution, population=1)
    plan = Plan(1, population.living(repo), [])
    change = patch_file(repo, tmp_path, "darwin/bo", "warmup_steps = 50", "warmup_steps = 25")
    assert cli("propose", "--from", change, "--title", "Shorter warmup", "--to", "bo", "-C", repo).exit_code == 0
    assert cli("approve", "r1", "-C", repo).exit_code == 0  # between this generation's plan and its selection
    moved = population.living(repo)["bo"]
    baseline = typed(Summary, {"generation": 0, "survivors": [], "best": {"name": "ada", "sha": story.root, "fitness": 2.0},
                               "baseline_fitness": 2.0, "delta_vs_baseline": 0.0, "wall_s": 0.0})
    summary = Generation(repo, cfg, quiet())._select(1, plan, plan.population, baseline, 0.0)
    assert [s.name for s in summary.survivors] == ["ada"] and summary.pruned == []
    assert population.living(repo) == {"ada": story.root, "bo": moved}  # the merge is scored next generation


def test_evolve_pauses_while_requests_are_open(story, tmp_path):
    repo = story.repo
    cfg = config.load(repo)
    cfg.evolution = replace(cfg.evolution, pause_on_requests=True)
    (repo / "darwin.toml").write_text(cfg.to_toml())
    change = patch_file(repo, tmp_path, "darwin/ada", "warmup_steps = 50", "warmup_steps = 25")
    assert cli("propose", "--from", change, "--title", "Shorter warmup", "--to", "ada", "-C", repo).exit_code == 0
    result = cli("evolve", "-g", "1", "-C", repo)
    assert result.exit_code == 0 and "paused: 1 open request(s) wait for review (r1)" in result.output, result.output
    assert "refs/darwin/generations" not in every_ref(repo)  # nothing ran: no baseline, no plan
    assert config.Config.from_toml(cfg.to_toml()).evolution.pause_on_requests is True
    assert evo_config(tmp_path).evolution.pause_on_requests is False  # off by default: nobody waits


def commit_on(repo, base: str, files: dict[str, tuple[str, str]], message: str) -> str:
    """A commit on `base` adding or replacing {path: (mode, content)}, made with plain git plumbing."""
    index = {**os.environ, "GIT_INDEX_FILE": str(repo / ".git" / "test-index")}
    subprocess.run(["git", "-C", str(repo), "read-tree", base], env=index, check=True)
    for path, (mode, content) in files.items():
        blob = subprocess.run(["git", "-C", str(repo), "hash-object", "-w", "--stdin"], input=content, check=True,
                              capture_output=True, text=True).stdout.strip()
        subprocess.run(["git", "-C", str(repo), "update-index", "--add", "--cacheinfo", f"{mode},{blob},{path}"],
                       env=index, check=True)
    tree = subprocess.run(["git", "-C", str(repo), "write-tree"], env=index, check=True, capture_output=True,
                          text=True).stdout.strip()
    return git(repo, "commit-tree", tree, "-p", base, "-m", message).strip()


def test_what_a_request_would_commit_is_checked_when_filed_and_when_approved(story, tmp_path):
    repo, cfg, root = story.repo, story.cfg, story.root
    cheats = attacks(repo, root, git(repo, "show", f"{root}:train.py"), tmp_path)
    refs = every_ref(repo)
    for name in ("rename headers under a train.py header", "copy to hooks/pre-commit", "symlink to the cache"):
        patch, words = cheats[name]
        (tmp_path / "cheat.patch").write_text(patch)
        assert_one_line_error(cli("propose", "--from", tmp_path / "cheat.patch", "--title", "t", "--to", "ada",
                                  "-C", repo), words)
    git(repo, "branch", "linked", commit_on(repo, root, {"cache": ("120000", "/home/user/.cache")}, "a symlink"))
    assert_one_line_error(cli("propose", "--from", "linked", "--title", "t", "--to", "ada", "-C", repo),
                          "makes 'cache' a symlink")
    assert {line for line in every_ref(repo).splitlines()} - {line for line in refs.splitlines()} \
        == {f"refs/heads/linked {git(repo, 'rev-parse', 'linked').strip()}"}

    draft = RequestDraft("script", "Tune it", "An agent's idea.", patch=cheats["copy to hooks/pre-commit"][0])
    doc = review.file(repo, cfg, draft, agent="ada", via="llm", genome="ada", base=root, generation=1)
    assert doc.commit == "" and "hooks/pre-commit" in doc.rationale  # still heard, without the edits

    # a log entry edited by hand to point at a commit that changes darwin.toml is not merged either
    settings = git(repo, "show", f"{root}:darwin.toml")
    evil = commit_on(repo, root, {"darwin.toml": ("100644", settings.replace('"20800tokens"', '"2000000tokens"'))}, "x")
    commit, old = plumbing.log_commit(repo, review.LOG, {"r1.json": json.dumps({**doc.json(), "commit": evil})},
                                      "hand edit")
    git(repo, "update-ref", review.LOG, commit, old)
    before = population.living(repo)
    assert_one_line_error(cli("approve", "r1", "-C", repo),
                          "conflicts with darwin/ada: the change touches 'darwin.toml', which the evaluator owns")
    assert population.living(repo) == before and requests_json(repo)[0]["state"] == "open"
