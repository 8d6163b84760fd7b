"""Reading the population back out of git: leaderboard, one genome, a lineage.

Every read is batched (for-each-ref, notes list + cat-file --batch, one `git log --stdin`), so
`status` costs a handful of git processes whatever the population size.
"""
from __future__ import annotations

import statistics
from pathlib import Path

from . import breeding, fitness, git, memory, population, review
from .config import Config, resolved_operator
from .errors import DarwinError
from .population import ARCHIVE, LIVE
from .selection import Genome, within_noise


def check_records(repo: Path, cfg: Config) -> None:
    """Read every record a generation relies on, so a broken one stops it before anything trains: its
    own readers meet some of them only after training (adding a run to a note it cannot read)."""
    fitness.all_fitness(repo, cfg.notes.fitness)
    git.notes_json(repo, cfg.notes.mutation)
    breeding.failures(repo, cfg)
    population.generations(repo)
    review.load(repo)


def _mfu(doc: fitness.FitnessDoc) -> float | None:
    values = [r["mfu"] for r in doc.runs if isinstance(r.get("mfu"), (int, float))]
    return statistics.fmean(values) if values else None


def leaderboard(repo: Path, cfg: Config, include_archive: bool = False) -> dict:
    """Every living (and optionally archived) genome with fitness and change, best first."""
    names = {name: (sha, False) for name, sha in population.living(repo).items()}
    if include_archive:
        names.update({name: (sha, True) for name, sha in population.archived(repo).items()})
    docs = fitness.all_fitness(repo, cfg.notes.fitness)
    info = git.commit_info(repo, sorted({sha for sha, _ in names.values()}))
    rows = []
    for name, (sha, archived) in names.items():
        doc, ci = docs.get(sha, fitness.UNEVALUATED), info.get(sha)
        trailers = ci.trailers if ci else {}
        parent = trailers.get("Darwin-Parent", "")
        rows.append({
            "name": name, "sha": sha, "archived": archived,
            "generation": int(trailers.get("Darwin-Generation", 0)),
            "fitness": doc.fitness, "spread": doc.spread, "n": doc.n, "test": doc.test, "status": doc.status,
            "mfu": _mfu(doc),
            "operator": trailers.get("Darwin-Operator", "template"),
            "parent": " ".join(p[:8] for p in parent.split()), "title": ci.subject if ci else "",
        })
    rows.sort(key=lambda r: (r["fitness"] is None, r["fitness"] if r["fitness"] is not None else 0, r["name"]))
    ok = [Genome(r["name"], r["sha"], r["fitness"], r["spread"], r["n"], r["status"]) for r in rows
          if r["status"] == "ok" and not r["archived"]]
    first: dict[str, Genome] = {}  # one entry per commit: two branches on one sha are not a lead
    for g in ok:
        first.setdefault(g.sha, g)
    distinct = list(first.values())
    gens = population.generations(repo)
    return {
        "repo": repo.name, "strategy": cfg.evolution.strategy, "operator": resolved_operator(cfg), "model": cfg.llm.model,
        "usage": llm_usage(repo, cfg),
        "generation": max((g for g, step in gens.items() if step.summary), default=-1),
        "lead_within_noise": len(distinct) > 1 and within_noise(distinct[0], distinct[1]),
        "genomes": rows,
    }


def llm_usage(repo: Path, cfg: Config, generation: int | None = None) -> dict:
    """Tokens, requests and cost summed over every mutation note, failed proposal and digest rewrite
    (of one generation, when given)."""
    def of(g) -> bool:
        return generation is None or g == generation

    total = {"prompt_tokens": 0, "completion_tokens": 0, "requests": 0, "cost_usd": 0.0}
    spends = [(note.get("usage"), note.get("cost_usd")) for note in git.notes_json(repo, cfg.notes.mutation).values()
              if of(note.get("generation"))]
    spends += [(f.usage, f.cost_usd) for f in breeding.failures(repo, cfg) if of(f.generation)]
    spends += [(usage, usage.get("cost_usd")) for g, usage in memory.digest_usage(repo) if of(g)]
    for usage, cost in spends:
        usage = usage if isinstance(usage, dict) else {}
        for key in ("prompt_tokens", "completion_tokens", "requests"):
            total[key] += int(usage.get(key) or 0)
        total["cost_usd"] += float(cost or 0.0)
    total["cost_usd"] = round(total["cost_usd"], 6)
    return total


def resolve_genome(repo: Path, name: str) -> tuple[str, str]:
    """(display name, sha) for a branch name, an archived name, or any revision."""
    short = name.removeprefix("darwin/")
    for prefix in (LIVE, ARCHIVE):
        if git.exists(repo, prefix + short):
            return short, git.resolve(repo, prefix + short)
    try:
        return name, git.resolve(repo, name)
    except DarwinError:
        raise DarwinError(f"no genome named {name!r}: not a darwin/* branch, an archived genome or a revision; "
                          "see `darwin-git status --all`") from None


def describe(repo: Path, cfg: Config, name: str) -> dict:
    display, sha = resolve_genome(repo, name)
    ci = git.commit_info(repo, [sha])[sha]
    diff = git.diff(repo, ci.parents[0], sha) if ci.parents else ""
    return {
        "name": display, "sha": sha, "title": ci.subject, "body": ci.body.split("\n\nDarwin-")[0].strip()
        if ci.trailers else ci.body, "trailers": ci.trailers, "diff": diff,
        "fitness": fitness.of(repo, cfg.notes.fitness, sha),
        "failures": [f for f in breeding.failures(repo, cfg) if f.parent == sha],
    }


def ancestry(repo: Path, cfg: Config, name: str) -> list[dict]:
    """First-parent ancestry, oldest first, with each step's fitness change."""
    _, sha = resolve_genome(repo, name)
    shas = git.rev_list(repo, sha, first_parent=True, reverse=True)
    docs = fitness.all_fitness(repo, cfg.notes.fitness)
    info = git.commit_info(repo, shas)
    rows, previous = [], None
    for s in shas:
        ci, f = info[s], docs.get(s, fitness.UNEVALUATED).fitness
        rows.append({"sha": s, "generation": int(ci.trailers.get("Darwin-Generation", 0)),
                     "operator": ci.trailers.get("Darwin-Operator", "template"), "title": ci.subject,
                     "fitness": f, "delta": None if f is None or previous is None else round(f - previous, 6)})
        previous = f if f is not None else previous
    return rows
