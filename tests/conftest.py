"""Shared fixtures: a learnable text corpus, a private cache, and real git repos holding genomes."""
from __future__ import annotations

import random
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from darwin_git.corpus import prepare
from darwin_git.evaluator import EvalSettings

GENOME = Path(__file__).resolve().parent.parent / "genome"
WORDS = ("the king queen lord lady love death night day sword crown heart blood fair sweet good noble "
         "speak come go thou thee thy hath doth shall will not my our your with and but for").split()


def make_text(n_chars: int = 120_000, seed: int = 0) -> str:
    """Pseudo-verse with real structure (a vocabulary, line breaks, speakers) a model can learn."""
    rng = random.Random(seed)
    out, size = [], 0
    while size < n_chars:
        speaker = rng.choice(("KING", "QUEEN", "LORD", "FOOL")) + ".\n"
        lines = "".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 9))).capitalize() + ",\n"
                        for _ in range(rng.randint(1, 4)))
        out.append(speaker + lines + "\n")
        size += len(out[-1])
    return "".join(out)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="session")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def _private_cache(cache, monkeypatch):
    """Every test uses one throwaway cache dir: the user's real cache is never touched."""
    monkeypatch.setenv("DARWIN_GIT_CACHE", str(cache))
    monkeypatch.setenv("GIT_AUTHOR_NAME", "test")
    monkeypatch.setenv("GIT_AUTHOR_EMAIL", "test@example.com")
    monkeypatch.setenv("GIT_COMMITTER_NAME", "test")
    monkeypatch.setenv("GIT_COMMITTER_EMAIL", "test@example.com")


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "verse.txt"
    path.write_text(make_text())
    return path


@pytest.fixture(scope="session")
def corpus(corpus_file, cache):
    return prepare(str(corpus_file), "char", root=cache)


@pytest.fixture
def settings(corpus_file) -> EvalSettings:
    """Tiny but real: 40 optimizer steps, a small scored slice, short stage timeouts."""
    return EvalSettings(budget="40steps", data=str(corpus_file), score_tokens=2048, memory_mb=3000,
                        smoke_timeout_s=60, score_timeout_s=60, timeout_s=120, peak_flops=1e11)


@pytest.fixture
def genome_repo(tmp_path) -> Path:
    """A plain git repo whose one commit is the genome template."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    for f in ("model.py", "train.py"):
        shutil.copy(GENOME / f, repo / f)
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "genome")
    return repo


def commit_edit(repo: Path, path: str, old: str, new: str, message: str = "edit") -> str:
    """Commit a text replacement on top of HEAD; return the new sha."""
    f = repo / path
    text = f.read_text()
    assert old in text, f"{old!r} not in {path}"
    f.write_text(text.replace(old, new, 1))
    git(repo, "commit", "-qam", message)
    return git(repo, "rev-parse", "HEAD").strip()


def quick(settings: EvalSettings, **kw) -> EvalSettings:
    return replace(settings, **kw)
