"""The one git entry point: hooks never run for the harness, and still run for people."""
from __future__ import annotations

import subprocess
from pathlib import Path

from darwin_git import breeding, git, patches, population
from darwin_git.fitness import add_run
from darwin_git.population import init_repo

from .conftest import evo_config
from .conftest import git as plain_git
from .test_mutation import diff, edit

HOOKS = ("post-checkout", "reference-transaction", "pre-commit", "post-commit", "commit-msg", "post-merge",
         "post-rewrite", "pre-auto-gc")


def test_the_harness_never_runs_hooks_and_people_still_do(tmp_path, corpus_file):
    repo = tmp_path / "evo"
    cfg = evo_config(corpus_file)
    init_repo(repo, cfg)
    marker = tmp_path / "ran"
    for hook in HOOKS:  # each hook says it ran, then lets git go on
        path = repo / ".git" / "hooks" / hook
        path.write_text(f"#!/bin/sh\necho {hook} >> {marker}\nexit 0\n")
        path.chmod(0o755)
    root = plain_git(repo, "rev-parse", "darwin/ada").strip()

    wt = tmp_path / "wt"
    git.worktree_add(repo, wt, root)  # post-checkout, reference-transaction
    assert (wt / "train.py").is_file()
    git.worktree_remove(repo, wt)
    train = plain_git(repo, "show", f"{root}:train.py")
    tree = patches.apply(repo, root, diff("train.py", train, edit(train, "= 2e-3", "= 4e-3")))
    child = breeding.commit_child(repo, cfg, "ada-g1-0", tree, [root], "Raise the learning rate", "Faster.",
                                  {"Darwin-Operator": "test"}, {"operator": "test"})  # commit, note, create-only ref
    add_run(repo, {"commit": child.sha, "seed": 1, "status": "ok", "test_bpb": 2.0}, cfg.notes.fitness)
    git.update_ref(repo, "refs/heads/darwin/bo", child.sha, old=root)
    population.prune(repo, {"bo": child.sha})  # a ref transaction
    population.record_generation(repo, population.Plan(1, {}, []), "generation 1: plan")
    assert git.merge_trees(repo, root, child.sha)[0] == tree
    assert not marker.exists(), marker.read_text()

    (repo / "GENOME.md").write_text("a person's note\n")  # people's own commits still run the hooks
    subprocess.run(["git", "-C", str(repo), "commit", "-qam", "A note"], check=True)
    assert {"pre-commit", "commit-msg", "post-commit", "reference-transaction"} <= set(marker.read_text().split())


def test_every_git_process_passes_the_one_entry_point():
    """No module runs `git` past git.run, which is what turns the hooks off."""
    package = Path(git.__file__).parent
    for path in package.rglob("*.py"):
        text = path.read_text()
        assert '["git"' not in text.replace('["git", *HOOKS_OFF', ""), path
