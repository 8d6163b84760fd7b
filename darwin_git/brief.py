"""The experiment log an LLM operator reads before it changes a genome (OPRO: the optimizer sees
its scored trajectory): which genome it changes and how good it is, with run metrics; the lineage
from the template to it, each step's delta labelled against the measured noise; the population's
best genomes and what sets them apart; what each kind of change did across the population (the
statistics the offline learner ranks by); recent failures with their stderr, apart from failures of
the machinery; what siblings in this generation already changed; the task's facts and budget.

Built from the one history a generation reads (memory.History) plus the fitness notes, and cut to
BRIEF_TOKENS by dropping the oldest lineage steps and failures first.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

from . import fitness, population
from .config import Config
from .memory import Change, History, bpb, infrastructure
from .operators import llm_tokens
from .operators.offline import arm_of

BRIEF_TOKENS = 1500  # the most the experiment log may take of a prompt
TAIL_CHARS = 300  # of a failed run's stderr
BEST = 3  # other genomes shown
KINDS_SHOWN = (5, 3)  # kinds of change shown: the best by mean delta, and the worst


@dataclass
class Target:
    """The genome a slot changes, and where the search stands."""

    name: str
    sha: str
    generation: int  # the generation the child will belong to
    meta: dict  # corpus.genome_meta(): what a genome may know of its data


def _score(doc: fitness.FitnessDoc) -> str:
    if doc.fitness is None:
        return doc.status or "not evaluated yet"
    spread = f" ± {doc.spread:.4f} over {doc.n} runs" if doc.n > 1 else " (one run: spread not measured)"
    test = f"; test bpb {doc.test:.4f}" if doc.test is not None else ""
    return f"val bpb {doc.fitness:.4f}{spread}{test}"


def _metrics(doc: fitness.FitnessDoc) -> str:
    """The latest good run's figures, all measured by the harness (train loss is the genome's own report)."""
    run = next((r for r in reversed(doc.runs) if r.get("status") == "ok"), None)
    if not run:
        return ""
    reported = run.get("reported") or {}
    parts = []
    if run.get("tokens") and run.get("wall_s"):
        parts.append(f"{run['tokens']:,} tokens in {run['wall_s']:.1f}s ({run.get('tokens_per_s') or 0:,.0f} tokens/s)")
    if run.get("mfu") is not None:
        parts.append(f"MFU {run['mfu']:.2%}")
    if isinstance(reported.get("steps"), int):
        parts.append(f"{reported['steps']} steps")
    if isinstance(reported.get("train_loss"), (int, float)):
        parts.append(f"final train loss {reported['train_loss']:.4f} (the genome's report)")
    if run.get("peak_mem"):
        parts.append(f"peak memory {run['peak_mem'] / 2**20:,.0f} MiB")
    if run.get("params"):
        parts.append(f"{run['params']:,} parameters")
    if not parts:
        return ""
    return "Last run: " + ", ".join(parts) + "."


def lineage(hist: History, sha: str) -> list[Change]:
    """The changes from the template to `sha`, oldest first (first parents: a merge's own line)."""
    by_sha = {c.sha: c for c in hist.changes}
    steps = []
    while sha in by_sha and len(steps) < 1000:
        steps.append(by_sha[sha])
        sha = by_sha[sha].parent
    return steps[::-1]


def _step(hist: History, c: Change) -> str:
    d = "" if c.delta is None else f" {c.delta:+.4f}, {hist.verdict(c)}"
    return f"- g{c.generation} [{c.operator}] \"{c.title}\": {bpb(c.before)} -> {bpb(c.after)}{d}"


def _apart(hist: History, sha: str, mine: set[str]) -> str:
    """What another genome's line has that this one's lacks, by change title."""
    extra = [f'"{c.title}"' for c in lineage(hist, sha) if c.title not in mine]
    return f"its line differs by: {', '.join(extra)}" if extra else "an ancestor of this genome: nothing its line lacks"


def _effects(hist: History) -> list[str]:
    """Each kind of change's mean val bpb delta over its scored children in the whole population, best
    first and worst last: the statistics the offline learner ranks its arms by ([evolution] learn)."""
    deltas: dict[str, list[float]] = {}
    for c in hist.changes:
        if c.delta is not None:
            deltas.setdefault(arm_of(c.operator, c.title), []).append(c.delta)
    mean = {kind: statistics.fmean(d) for kind, d in deltas.items()}
    rows = sorted(deltas, key=mean.__getitem__)
    best, worst = KINDS_SHOWN
    shown = rows if len(rows) <= best + worst else rows[:best] + rows[-worst:]
    return [f"- {kind}: {mean[kind]:+.4f} mean over {len(deltas[kind])}"
            + (f" (best {min(deltas[kind]):+.4f})" if len(deltas[kind]) > 1 else "") for kind in shown]


def _failures(hist: History, docs: dict[str, fitness.FitnessDoc], limit: int) -> tuple[list[str], list[str]]:
    """(recent failures of ideas, with the failed run's stderr tail; recent failures of the machinery)."""
    ideas, machinery = [], []
    for c in hist.changes:
        if c.status and c.status != "ok":
            bad = next((r for r in docs.get(c.sha, fitness.UNEVALUATED).runs if r.get("status") != "ok"), {})
            tail = " ".join((bad.get("error") or "").split())[-TAIL_CHARS:]
            ideas.append((c.generation, f"- g{c.generation} {c.name} \"{c.title}\": {c.status} at "
                                        f"{bad.get('stage', '?')}; stderr ends: {tail or '(nothing)'}"))
    for a in hist.attempts:
        title = f' "{a.title}"' if a.title else ""
        line = (a.generation, f"- g{a.generation} slot {a.slot} from {a.parent_name}{title}: "
                              f"{' '.join(a.reason.split())[:TAIL_CHARS]}")
        (machinery if infrastructure(a.reason) else ideas).append(line)
    return _recent(ideas, limit), _recent(machinery, limit)


def _recent(rows: list[tuple[int, str]], limit: int) -> list[str]:
    return [line for _, line in sorted(rows, key=lambda r: r[0])[-limit:]]


def text(repo: Path, cfg: Config, hist: History, target: Target, limit: int = BRIEF_TOKENS) -> str:
    """The log for a change of `target`, cut to about `limit` tokens."""
    docs = hist.docs
    doc = docs.get(target.sha, fitness.UNEVALUATED)
    steps = lineage(hist, target.sha)
    living = population.living(repo)
    best = sorted((n for n, sha in living.items() if sha != target.sha and docs.get(sha, fitness.UNEVALUATED).fitness),
                  key=lambda n: docs[living[n]].fitness)[:BEST]
    mine = {c.title for c in steps}
    siblings = [c for c in hist.changes if c.generation == target.generation]
    noise = hist.noise()
    effects = _effects(hist)
    e = cfg.evaluation
    task = (f"# The task\nCorpus {e.data} ({target.meta.get('tokenizer', e.tokenizer)} tokens, vocabulary "
            f"{target.meta.get('vocab_size', '?')}, {target.meta.get('train_tokens', 0):,} training tokens); budget "
            f"{e.budget} per run; device {e.device}, {e.threads} CPU thread(s), memory limit {e.memory_mb} MB; "
            f"this child is in generation {target.generation}. Fitness is val bits per byte on held-out text, "
            "lower is better; selection never sees the test split.")
    noise_line = ("# Noise\n" + (f"Seeds alone move val bpb by about ±{noise:.4f} here (median spread of the genomes "
                                 "run twice or more): a delta within twice the combined spread is not evidence."
                                 if noise is not None else "Not measured yet: no genome has two runs."))

    def build(n_steps: int, n_fail: int) -> str:
        ideas, machinery = _failures(hist, docs, n_fail)
        shown = steps[-n_steps:] if n_steps else []
        parts = [f"# The genome to change: {target.name} ({target.sha[:10]})\n{_score(doc)}. {_metrics(doc)}".rstrip(),
                 f"# Its lineage from the template ({bpb(hist.baseline)} bpb), oldest first\n"
                 + (f"({len(steps) - len(shown)} earlier steps left out)\n" if len(shown) < len(steps) else "")
                 + ("\n".join(_step(hist, c) for c in shown) or "(it is the template itself)"),
                 noise_line,
                 "# The best other living genomes\n" + ("\n".join(
                     f"- {n}: {_score(docs[living[n]])}; {_apart(hist, living[n], mine)}" for n in best) or "(none yet)"),
                 "# What each kind of change did here (mean val bpb change vs parent, all lineages)\n"
                 + ("\n".join(effects) or "(nothing scored yet)"),
                 "# Recent failed changes across the population (the idea or its code failed)\n"
                 + ("\n".join(ideas) or "(none)")]
        if machinery:
            parts.append("# Failures of the machinery, not of the ideas (endpoint, cost caps, the plan)\n"
                         + "\n".join(machinery))
        if siblings:
            parts.append("# Already changed by siblings in this generation: do not repeat these\n"
                         + "\n".join(f'- {c.name} from {c.parent[:10]}: "{c.title}"' for c in siblings))
        parts.append(task)
        return "\n\n".join(parts)

    n_steps, n_fail = len(steps), 8
    out = build(n_steps, n_fail)
    while llm_tokens.count(out) > limit and (n_steps > 3 or n_fail > 2):
        n_steps, n_fail = max(3, n_steps - 2), max(2, n_fail - 1)
        out = build(n_steps, n_fail)
    return out
