"""The evaluator against real genomes: good, broken, hanging, greedy, diverging and cheating ones."""
from __future__ import annotations

import json
import subprocess

import pytest
from click.testing import CliRunner

from darwin_git import sandbox
from darwin_git.cli import main
from darwin_git.config import parse_budget
from darwin_git.evaluator import evaluate
from darwin_git.errors import DarwinError

from .conftest import commit_edit, git, quick

IMPORTS = "from model import GPT, GPTConfig\n"


def test_normal_run_scores_below_unigram_entropy_and_is_deterministic(genome_repo, settings, corpus):
    first = evaluate(genome_repo, "HEAD", settings, corpus)
    assert first.status == "ok", first.error
    assert first.stage == "done"
    assert first.val_bpb < corpus.meta["unigram_bits_per_byte"] - 0.5
    assert first.test_bpb > 0 and first.tokens_per_s > 0 and first.mfu > 0
    assert first.tokens == 40 * 16 * 65 and first.reported["steps"] == 40  # the harness counted what it served
    assert first.params == 801_920  # counted in the checkpoint, the tied head once
    assert first.flops_per_token == 6 * first.params and first.data_stopped_s < first.wall_s
    assert first.sandbox == ("bwrap" if sandbox.bwrap_works() else "none")
    assert {"worktree", "smoke", "train", "score", "cleanup"} <= set(first.stage_s)  # check runs inside smoke
    assert abs(sum(first.stage_s.values()) - first.eval_s) < 0.1 and first.stage_s["train"] >= first.wall_s
    again = evaluate(genome_repo, "HEAD", settings, corpus)
    assert (again.val_bpb, again.test_bpb) == (first.val_bpb, first.test_bpb)  # same seed, token budget: identical
    other_seed = evaluate(genome_repo, "HEAD", quick(settings, seed=7), corpus, test=False)
    assert other_seed.val_bpb != first.val_bpb and other_seed.test_bpb is None
    assert git(genome_repo, "worktree", "list").count("\n") == 1  # evaluation worktrees are gone


def test_genome_that_raises_fails_fast_at_smoke(genome_repo, settings, corpus):
    commit_edit(genome_repo, "train.py", IMPORTS, IMPORTS + "raise RuntimeError('boom from genome')\n")
    rec = evaluate(genome_repo, "HEAD", settings, corpus)
    assert (rec.status, rec.stage) == ("crashed", "smoke")
    assert "boom from genome" in rec.error and "exit code 1" in rec.error
    assert rec.eval_s < 30


@pytest.mark.parametrize("smoke", [True, False], ids=["smoke", "no-smoke"])
def test_syntax_error_fails_at_check(genome_repo, settings, corpus, smoke):
    """Without the smoke ([evaluation] smoke = false) the check runs in the train stage's process, first."""
    commit_edit(genome_repo, "model.py", "import math\n", "import math\ndef broken(:\n")
    rec = evaluate(genome_repo, "HEAD", quick(settings, smoke=smoke), corpus)
    assert (rec.status, rec.stage) == ("crashed", "check")
    assert "SyntaxError" in rec.error and ("smoke" in rec.stage_s) is smoke


def test_sleeper_is_killed_with_its_children(genome_repo, settings, corpus):
    code = "import subprocess, time\nsubprocess.Popen(['sleep', '987'])\ntime.sleep(600)\n"
    commit_edit(genome_repo, "train.py", IMPORTS, IMPORTS + code)
    rec = evaluate(genome_repo, "HEAD", quick(settings, smoke_timeout_s=4), corpus)
    assert (rec.status, rec.stage) == ("timeout", "smoke")
    assert rec.eval_s < 30
    orphans = subprocess.run(["pgrep", "-f", "sleep 987"], capture_output=True, text=True).stdout
    assert orphans == ""


def test_memory_hog_is_stopped(genome_repo, settings, corpus):
    code = "hog = []\nfor _ in range(80):\n    hog.append(bytearray(b'x' * 100_000_000))\n"
    commit_edit(genome_repo, "train.py", IMPORTS, IMPORTS + code)
    rec = evaluate(genome_repo, "HEAD", quick(settings, memory_mb=1500), corpus)
    assert (rec.status, rec.stage) == ("oom", "smoke")
    assert "1500 MB" in rec.error


def test_nan_training_loss_is_diverged(genome_repo, settings, corpus):
    commit_edit(genome_repo, "train.py", "learning_rate = 2e-3", "learning_rate = float('nan')")
    rec = evaluate(genome_repo, "HEAD", settings, corpus)
    assert rec.status == "diverged" and rec.stage == "smoke"


def test_nan_logits_at_scoring_are_caught_by_the_harness(genome_repo, settings, corpus):
    commit_edit(genome_repo, "model.py", "        logits = self.lm_head(self.ln_f(x))\n",
                "        logits = self.lm_head(self.ln_f(x))\n"
                "        if not self.training:\n            logits = logits * float('nan')\n")
    rec = evaluate(genome_repo, "HEAD", settings, corpus)
    assert (rec.status, rec.stage) == ("diverged", "score")
    assert rec.test_bpb is None


def test_environment_has_no_secrets(monkeypatch):
    for name in ("OPENAI_API_KEY", "MY_SERVICE_TOKEN", "DB_PASSWORD", "DATABASE_URL", "SENTRY_DSN", "GIT_DIR"):
        monkeypatch.setenv(name, "secret")
    env = sandbox.clean_env({"DARWIN_SEED": "1"})
    assert "secret" not in env.values()  # an allow-list: names no pattern would catch stay out too
    assert env["DARWIN_SEED"] == "1" and "PATH" in env


def test_budget_parsing():
    assert parse_budget("60s") == ("s", 60.0)
    assert parse_budget("100000tokens") == ("tokens", 100000.0)
    for bad in ("60", "60x", "-5s", "0tokens", ""):
        with pytest.raises(DarwinError):
            parse_budget(bad)
    with pytest.raises(DarwinError, match="step budgets are gone"):
        parse_budget("300steps")


def test_cli_eval_writes_a_note_plain_git_can_read(genome_repo, corpus_file):
    result = CliRunner().invoke(main, ["eval", "HEAD", "-C", str(genome_repo), "--budget", "20800tokens",
                                       "--data", str(corpus_file), "--note", "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    assert record["status"] == "ok"
    note = json.loads(git(genome_repo, "notes", "--ref", "refs/notes/darwin/fitness", "show", "HEAD"))
    assert note["fitness"] == record["val_bpb"] and note["test"] == record["test_bpb"]
    assert note["split"] == "val" and note["runs"][0]["commit"] == record["commit"]


@pytest.mark.parametrize("args, words", [
    (["eval", "no-such-rev"], "unknown revision"),
    (["eval", "HEAD", "--budget", "60x"], "budget"),
    (["eval", "HEAD", "--data", "/nonexistent/corpus.txt"], "not found"),
])
def test_cli_bad_input_is_one_line(genome_repo, args, words):
    result = CliRunner().invoke(main, args + ["-C", str(genome_repo)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], result.output


def test_cli_not_a_genome_and_not_a_repo(tmp_path):
    repo = tmp_path / "plain"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "README").write_text("hi\n")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "plain")
    result = CliRunner().invoke(main, ["eval", "HEAD", "-C", str(repo)])
    assert result.exit_code == 1 and "is not a genome" in result.output
    result = CliRunner().invoke(main, ["eval", "HEAD", "-C", str(tmp_path)])
    assert result.exit_code == 1 and "not inside a git repository" in result.output


def test_without_bubblewrap_only_harness_written_code_runs_unsandboxed(genome_repo, settings, corpus, monkeypatch):
    from darwin_git import evaluator

    monkeypatch.setattr(sandbox, "bwrap_works", lambda: False)
    offline = commit_edit(genome_repo, "train.py", "beta2 = 0.95", "beta2 = 0.99",
                          "Raise beta2\n\nDarwin-Operator: offline:adam_beta2")
    assert evaluator._sandbox_mode(settings, genome_repo, offline) == "none"  # the catalogue's own code
    llm = commit_edit(genome_repo, "train.py", "beta1 = 0.9", "beta1 = 0.8", "Lower beta1\n\nDarwin-Operator: llm:gpt")
    with pytest.raises(DarwinError, match="will not run unsandboxed"):
        evaluate(genome_repo, llm, settings, corpus)
    assert evaluator._sandbox_mode(quick(settings, sandbox="none"), genome_repo, llm) == "none"  # said explicitly
    with pytest.raises(DarwinError, match="use auto, bwrap or none"):
        evaluate(genome_repo, llm, quick(settings, sandbox="bwarp"), corpus)
