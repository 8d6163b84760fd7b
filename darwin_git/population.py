"""The population as git refs: genome branches, the archive of pruned ones, the generations log.

  refs/heads/darwin/<name>      a living genome (branch = genome)
  refs/darwin/archive/<name>    a pruned genome: off the branch list, never garbage-collected
  refs/darwin/generations       a commit per step of every generation (plan.json, summary.json)

This module is the one writer of those refs; the log's files are typed records (Plan, Summary).
"""
from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import git
from .assets import asset_dir
from .config import CONFIG, Config
from .errors import DarwinError

LIVE = "refs/heads/darwin/"
ARCHIVE = "refs/darwin/archive/"
GENERATIONS = "refs/darwin/generations"
NAMES = ("ada", "bo", "cy", "dee", "eli", "fay", "gus", "hal", "ivy", "jo", "kit", "lu", "max", "ned",
         "oz", "pia", "quin", "ros", "sol", "tam", "uma", "vic", "wes", "xia", "yuri", "zoe")
TRAILERS = ("Darwin-Agent", "Darwin-Author", "Darwin-Parent", "Darwin-Operator", "Darwin-Generation",
            "Darwin-Model", "Darwin-Slot")


def agent_of(name: str) -> str:
    """The agent (lineage) a branch belongs to: 'ada-g3-1' -> 'ada'."""
    return name.split("-g", 1)[0]


def agent_names(n: int) -> list[str]:
    return [NAMES[i % len(NAMES)] + (str(i // len(NAMES)) if i >= len(NAMES) else "") for i in range(n)]


def install_hooks(repo: Path) -> None:
    hooks = git.git_dir(repo) / "hooks"
    hooks.mkdir(exist_ok=True)
    for hook in asset_dir("hooks").iterdir():
        if hook.is_file() and not hook.name.startswith(("_", ".")):
            shutil.copy(hook, hooks / hook.name)
            os.chmod(hooks / hook.name, 0o755)


def init_repo(path: Path, cfg: Config) -> list[str]:
    """Create an evolution repo at `path`: template root commit, settings, hooks, notes config, agents."""
    if path.exists() and any(path.iterdir()):
        if (path / CONFIG).is_file() and (path / ".git").exists():
            raise DarwinError(f"{path} is already an evolution repo; run `darwin-git generation` in it")
        raise DarwinError(f"{path} exists and is not empty; choose a new directory for the evolution repo")
    path.mkdir(parents=True, exist_ok=True)
    git.init(path)
    for f in ("model.py", "train.py", "GENOME.md"):
        shutil.copy(asset_dir("genome") / f, path / f)
    (path / CONFIG).write_text(cfg.to_toml())
    for key, value in (("notes.displayRef", "refs/notes/darwin/*"), ("notes.rewriteRef", "refs/notes/darwin/*"),
                       ("notes.rewrite.amend", "true"), ("notes.rewrite.rebase", "true"),
                       ("gc.reflogExpireUnreachable", "never")):
        git.config_set(path, key, value)
    if not git.config_get(path, "user.email"):
        git.config_set(path, "user.name", "darwin-git")
        git.config_set(path, "user.email", "darwin-git@localhost")
    install_hooks(path)
    root = git.commit_paths(path, ["model.py", "train.py", "GENOME.md", CONFIG],
                            "Genome template: a compact GPT trainer (generation 0)")
    names = agent_names(cfg.evolution.population)
    for name in names:
        git.update_ref(path, LIVE + name, root, old="", message="darwin-git init")
    return names


def living(repo: Path) -> dict[str, str]:
    """{agent branch short name: commit} for every living genome."""
    return {ref[len(LIVE):]: sha for ref, sha in git.refs(repo, LIVE).items()}


def archived(repo: Path) -> dict[str, str]:
    return {ref[len(ARCHIVE):]: sha for ref, sha in git.refs(repo, ARCHIVE).items()}


def create(repo: Path, name: str, sha: str, message: str) -> None:
    """A new genome branch, create-only: a name is never reused, so no child overwrites another."""
    git.update_ref(repo, LIVE + name, sha, old="", message=message)


def advance(repo: Path, moves: dict[str, tuple[str, str]], record: list[str]) -> None:
    """Move living genomes forward ({name: (tip, new tip)}) in one compare-and-swap transaction with
    `record`, the ref updates of the record that says why (the requests log): neither moves alone."""
    git.update_refs(repo, [*(f"update {LIVE}{n} {new} {old}" for n, (old, new) in sorted(moves.items())), *record])


def prune(repo: Path, names: dict[str, str]) -> None:
    """Move pruned branches to the archive in one ref transaction: all move or none do."""
    if not names:
        return
    commands = []
    for name, sha in sorted(names.items()):
        commands += [f"create {ARCHIVE}{name} {sha}", f"delete {LIVE}{name} {sha}"]
    git.update_refs(repo, commands)


def children_counts(repo: Path) -> dict[str, int]:
    """How many offspring each commit already has (living or archived), for parent choice."""
    counts: dict[str, int] = {}
    for parents in git.parents_of(repo, (LIVE, ARCHIVE)).values():
        for parent in parents:
            counts[parent] = counts.get(parent, 0) + 1
    return counts


# ---- the generations log ------------------------------------------------------------------------

LOG_FILE = re.compile(r"g(\d+)/(\w+)\.json")  # g0003/plan.json


@dataclass(frozen=True)
class Parent:
    name: str
    sha: str


@dataclass(frozen=True)
class Slot:
    """One planned offspring: its parents (the first is the target), its branch name, whose memory writes it."""

    slot: int
    kind: str  # "mutation" or "crossover"
    parents: list[Parent]
    child: str
    author: str = ""  # "" in plans made before authors existed: the target's own agent


@dataclass
class Plan:
    """What a generation will breed, recorded before it breeds anything, so a kill resumes the same plan."""

    generation: int
    population: dict[str, str]  # the living genomes it was planned from: name -> sha
    slots: list[Slot]
    started: float | None = None  # time.time() when planned; absent in the oldest plans
    parents: dict[str, str] = field(default_factory=dict)  # child name -> first parent's sha

    def __post_init__(self) -> None:
        self.parents = self.parents or {s.child: s.parents[0].sha for s in self.slots}


@dataclass(frozen=True)
class Survivor:
    name: str
    sha: str
    fitness: float | None
    spread: float = 0.0
    n: int = 0


@dataclass(frozen=True)
class Evaluated:
    fitness: float | None
    status: str


@dataclass(frozen=True)
class Unbred:
    """A slot that failed to become a child, as the summary shows it (breeding.Failure holds the rest)."""

    slot: int
    reason: str
    operator: str = ""


@dataclass
class Summary:
    """A finished generation: who survived, who was archived, what failed; its presence marks the end."""

    generation: int
    survivors: list[Survivor]
    best: Survivor
    baseline_fitness: float | None
    delta_vs_baseline: float
    wall_s: float
    pruned: list[str] = field(default_factory=list)
    failures: list[Unbred] = field(default_factory=list)
    evaluated: dict[str, Evaluated] = field(default_factory=dict)


@dataclass
class Step:
    """One generation's entries in the log."""

    plan: Plan | None = None
    summary: Summary | None = None


RECORDS = {"plan": Plan, "summary": Summary}


def generations(repo: Path) -> dict[int, Step]:
    """{generation: Step} read from the tip of refs/darwin/generations.

    Three git processes whatever the number of generations: rev-parse, ls-tree, one cat-file --batch.
    A file that is not a plan or a summary is a one-line error naming it and how to step back.
    """
    result: dict[int, Step] = {}
    for path, doc in git.read_log_json(repo, GENERATIONS).items():
        m = LOG_FILE.fullmatch(path)
        if not m or m[2] not in RECORDS:  # anything else in the log's tree was not written by darwin-git
            continue
        try:
            record = git.typed(RECORDS[m[2]], doc)
        except ValueError as e:
            raise git.corrupt_log(repo, GENERATIONS, path, f"is not a {m[2]} record ({e})") from None
        setattr(result.setdefault(int(m[1]), Step()), m[2], record)
    return result


def record_generation(repo: Path, record: Plan | Summary, message: str) -> None:
    """Add g<NNNN>/plan.json or summary.json to the generations log: objects first, then a CAS ref move."""
    name = next(k for k, cls in RECORDS.items() if isinstance(record, cls))
    text = json.dumps(asdict(record), indent=1, sort_keys=True) + "\n"
    commit, old = git.log_commit(repo, GENERATIONS, {f"g{record.generation:04d}/{name}.json": text}, message)
    git.update_ref(repo, GENERATIONS, commit, old=old, message=message)
