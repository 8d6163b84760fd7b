"""The population as git refs: init, the pre-commit hook, pruning to the archive, gc, and the reports."""
from __future__ import annotations

import json
import os
import subprocess

from darwin_git import config

from .conftest import (assert_one_line_error, cli, clone_repo, darwin_refs, generation_doc, git,
                       note)

LIVE, ARCHIVE = "refs/heads/darwin/", "refs/darwin/archive/"


def test_init_creates_settings_hooks_notes_config_and_agent_branches(tmp_path, corpus_file):
    repo = tmp_path / "evo"
    result = cli("init", repo, "--population", "2", "--budget", "20800tokens", "--data", corpus_file)
    assert result.exit_code == 0, result.output
    cfg = config.load(repo)
    assert cfg.evolution.population == cfg.evolution.offspring == 2
    assert cfg.evaluation.budget == "20800tokens" and cfg.evaluation.data == str(corpus_file.resolve())
    hook = repo / ".git" / "hooks" / "pre-commit"
    assert hook.is_file() and os.access(hook, os.X_OK)
    assert git(repo, "config", "notes.displayRef").strip() == "refs/notes/darwin/*"
    root = git(repo, "rev-list", "--max-parents=0", "HEAD").split()
    assert len(root) == 1
    assert darwin_refs(repo, LIVE) == {"ada": root[0], "bo": root[0]}
    assert {"darwin.toml", "train.py", "model.py"} <= set(git(repo, "ls-tree", "--name-only", root[0]).split())

    again = cli("init", repo, "--population", "2")
    assert_one_line_error(again, "already an evolution repo")

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine\n")
    assert_one_line_error(cli("init", busy), "not empty")
    assert (busy / "notes.txt").read_text() == "mine\n" and not (busy / ".git").exists()


def test_pre_commit_hook_guards_darwin_toml_on_genome_branches(tmp_path, corpus_file):
    repo = tmp_path / "evo"
    assert cli("init", repo, "--population", "1", "--budget", "20800tokens", "--data", corpus_file).exit_code == 0
    git(repo, "checkout", "-q", "darwin/ada")
    before = git(repo, "rev-parse", "HEAD")
    with open(repo / "darwin.toml", "a") as f:
        f.write("# a hand edit\n")
    refused = subprocess.run(["git", "-C", str(repo), "commit", "-qam", "tweak settings"],
                             capture_output=True, text=True)
    assert refused.returncode != 0
    assert "darwin-git: refusing commit on darwin/ada" in refused.stderr and "darwin.toml" in refused.stderr
    assert git(repo, "rev-parse", "HEAD") == before

    git(repo, "checkout", "-q", "--", "darwin.toml")
    train = repo / "train.py"
    train.write_text(train.read_text().replace("learning_rate = 2e-3", "learning_rate = 3e-3", 1))
    git(repo, "commit", "-qam", "Raise the learning rate")
    assert git(repo, "rev-parse", "HEAD") != before
    assert git(repo, "log", "-1", "--format=%s", "darwin/ada").strip() == "Raise the learning rate"


def test_pruned_genomes_are_archived_and_survive_gc(evolved_repo, tmp_path):
    live, archived = darwin_refs(evolved_repo, LIVE), darwin_refs(evolved_repo, ARCHIVE)
    assert len(git(evolved_repo, "branch", "--list", "darwin/*").splitlines()) == 2 == len(live)
    summary = generation_doc(evolved_repo, 1, "summary")
    assert archived and sorted(archived) == summary["pruned"]
    assert {s["name"] for s in summary["survivors"]} == set(live)
    assert not set(live) & set(archived)

    repo = clone_repo(evolved_repo, tmp_path / "gc")
    git(repo, "reflog", "expire", "--expire=now", "--all")
    git(repo, "gc", "-q", "--prune=now")
    for name, sha in archived.items():
        assert subprocess.run(["git", "-C", str(repo), "cat-file", "-e", sha]).returncode == 0, name
        doc = json.loads(note(repo, "fitness", sha))
        assert doc["status"] and doc["n"] >= 1
    assert darwin_refs(repo, ARCHIVE) == archived


def _child(repo) -> tuple[str, str]:
    """(name, sha) of a generation-1 child, living or archived."""
    everything = {**darwin_refs(repo, ARCHIVE), **darwin_refs(repo, LIVE)}
    children = sorted((n, s) for n, s in everything.items() if "-g1-" in n)
    assert children, everything
    return children[0]


def test_status_show_and_lineage(evolved_repo, tmp_path):
    live = darwin_refs(evolved_repo, LIVE)
    board = cli("status", "--json", "-C", evolved_repo)
    assert board.exit_code == 0, board.output
    rows = json.loads(board.output)["genomes"]
    assert {r["name"] for r in rows} == set(live) and not any(r["archived"] for r in rows)
    assert all(r["status"] == "ok" for r in rows)
    assert [r["fitness"] for r in rows] == sorted(r["fitness"] for r in rows)

    table = cli("status", "-C", evolved_repo)
    assert table.exit_code == 0 and all(name in table.output for name in live), table.output
    assert cli("status", "--all", "-C", evolved_repo).exit_code == 0

    name, sha = _child(evolved_repo)
    shown = cli("show", name, "-C", evolved_repo)
    assert shown.exit_code == 0, shown.output
    reasoning = json.loads(note(evolved_repo, "mutation", sha))["reasoning"]
    flat = " ".join(shown.output.split())
    assert " ".join(reasoning.split()) in flat
    diff = git(evolved_repo, "diff", f"{sha}^", sha)
    added = next(line for line in diff.splitlines() if line.startswith("+") and not line.startswith("+++"))
    assert "diff --git" in shown.output and " ".join(added.split()) in flat

    root = git(evolved_repo, "rev-list", "--max-parents=0", sha).strip()
    lineage = cli("lineage", name, "-C", evolved_repo)
    assert lineage.exit_code == 0 and root[:10] in lineage.output and sha[:10] in lineage.output, lineage.output

    assert_one_line_error(cli("show", "no-such", "-C", evolved_repo), "no genome named 'no-such'")
    plain = tmp_path / "plain"
    plain.mkdir()
    git(plain, "init", "-q")
    assert_one_line_error(cli("status", "-C", plain), "not an evolution repo")
    assert_one_line_error(cli("status", "-C", tmp_path), "not inside a git repository")
