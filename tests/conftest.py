"""Shared fixtures: a learnable text corpus, a private cache, and real git repos holding genomes."""
from __future__ import annotations

import random
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from rich.console import Console

from darwin_git.config import Config
from darwin_git.corpus import prepare
from darwin_git.config import EvalSettings

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


def _test_env(mp: pytest.MonkeyPatch, cache: Path) -> None:
    mp.setenv("DARWIN_GIT_CACHE", str(cache))
    mp.setenv("OMP_NUM_THREADS", "1")  # tiny models on a shared 2-core box: more threads only contend
    mp.setenv("GIT_AUTHOR_NAME", "test")
    mp.setenv("GIT_AUTHOR_EMAIL", "test@example.com")
    mp.setenv("GIT_COMMITTER_NAME", "test")
    mp.setenv("GIT_COMMITTER_EMAIL", "test@example.com")


@pytest.fixture(autouse=True)
def _private_cache(cache, monkeypatch):
    """Every test uses one throwaway cache dir: the user's real cache is never touched."""
    _test_env(monkeypatch, cache)


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "verse.txt"
    path.write_text(make_text())
    return path


@pytest.fixture(scope="session")
def corpus(corpus_file, cache):
    return prepare(str(corpus_file), "char", root=cache)


def tiny_settings(corpus_file: Path, budget: str = "41600tokens") -> EvalSettings:
    """Tiny but real: 40 template steps of served data, a small scored slice, short stage timeouts."""
    return EvalSettings(budget=budget, data=str(corpus_file), score_tokens=2048, memory_mb=3000,
                        smoke_timeout_s=60, score_timeout_s=60, timeout_s=120, peak_flops=1e11)


@pytest.fixture
def settings(corpus_file) -> EvalSettings:
    return tiny_settings(corpus_file)


def evo_config(corpus_file: Path, population: int = 2, offspring: int = 2, reevaluations: int = 1) -> Config:
    """darwin.toml settings for a tiny (mu + lambda) evolution repo: 20-step genomes on the test corpus, the
    novelty gate and paired promotion off unless a test turns them on."""
    cfg = Config()
    cfg.evolution = replace(cfg.evolution, strategy="evolution", population=population, offspring=offspring,
                            reevaluations=reevaluations, novelty=False, paired=False)
    cfg.evaluation = tiny_settings(corpus_file, "20800tokens")
    return cfg


def quiet() -> Console:
    return Console(quiet=True)


@pytest.fixture(scope="session")
def baseline_repo(tmp_path_factory, corpus_file, cache) -> Path:
    """An evolution repo (population 2, offspring 2, 1 re-evaluation) whose generation 0 is done.

    Read-only for tests: copy it with `clone_repo` before running anything that writes.
    """
    from darwin_git.generation import Generation
    from darwin_git.population import init_repo

    repo = tmp_path_factory.mktemp("evo") / "baseline"
    with pytest.MonkeyPatch.context() as mp:
        _test_env(mp, cache)
        cfg = evo_config(corpus_file)
        init_repo(repo, cfg)
        Generation(repo, cfg, quiet()).run()
    return repo


@pytest.fixture(scope="session")
def evolved_repo(tmp_path_factory, baseline_repo, cache) -> Path:
    """The baseline repo after `darwin-git evolve -g 1`. Read-only for tests."""
    from click.testing import CliRunner

    from darwin_git.cli import main

    repo = clone_repo(baseline_repo, tmp_path_factory.mktemp("evo") / "evolved")
    with pytest.MonkeyPatch.context() as mp:
        _test_env(mp, cache)
        result = CliRunner().invoke(main, ["evolve", "-g", "1", "-C", str(repo)])
    assert result.exit_code == 0, result.output
    return repo


def clone_repo(src: Path, dst: Path) -> Path:
    """A private copy of a whole evolution repo (refs, notes, hooks, config) to write into."""
    shutil.copytree(src, dst, symlinks=True)
    return dst


def template_repo_at(repo: Path) -> Path:
    """A plain git repo at `repo` whose one commit (on main) is the genome template."""
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    for f in ("model.py", "train.py"):
        shutil.copy(GENOME / f, repo / f)
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "genome")
    return repo


@pytest.fixture
def genome_repo(tmp_path) -> Path:
    return template_repo_at(tmp_path / "repo")


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


def cli(*args: str):
    """Run `darwin-git args...` in-process; return click's Result."""
    from click.testing import CliRunner

    from darwin_git.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


def assert_one_line_error(result, words: str) -> None:
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1, result.output
    assert len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], result.output


def note(repo: Path, kind: str, obj: str) -> str | None:
    """The note on `obj` under refs/notes/darwin/<kind>, read by plain git (None if absent)."""
    proc = subprocess.run(["git", "-C", str(repo), "notes", "--ref", f"refs/notes/darwin/{kind}", "show", obj],
                          capture_output=True, text=True)
    return proc.stdout if proc.returncode == 0 else None


def darwin_refs(repo: Path, prefix: str) -> dict[str, str]:
    """{short name: sha} of refs under `prefix` (refs/heads/darwin/ or refs/darwin/archive/)."""
    out = git(repo, "for-each-ref", "--format=%(refname) %(objectname)", prefix)
    return {ref[len(prefix):]: sha for ref, sha in (line.split() for line in out.splitlines())}


def generation_doc(repo: Path, g: int, name: str) -> dict:
    import json

    return json.loads(git(repo, "show", f"refs/darwin/generations:g{g:04d}/{name}.json"))
