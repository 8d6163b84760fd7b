"""What an operator is shown besides the code: its author's scored trajectory and the answers to its
requests, the population's best changes, and the population's "what worked" digest.

Everything is read back from git (commits, trailers, notes, the generations log) in a fixed
number of git processes, whatever the population size: memory survives kills, travels with the
repo, and `darwin-git memory <agent>` prints exactly what a model was shown.
"""
from __future__ import annotations

import json
import re
import statistics
from collections import Counter
from dataclasses import dataclass, field
from itertools import zip_longest
from pathlib import Path
from typing import Callable

from . import breeding, fitness, git, population, review, selection
from .config import Config
from .operators import Context, OperatorError, Outcome, llm_tokens
from .population import ARCHIVE, LIVE, agent_of

DIGEST = "refs/darwin/digest"  # a commit chain; each tree holds digest.md
MEMORY_TOKENS = 2000  # default budget of one agent's memory
REASONING_CHARS = 400
REASON_CHARS = 240
INSPIRATION = 3  # best improvements shown in every prompt
DIFF_LINES = 40
REQUESTS = 5  # an agent's most recent requests shown with their answers


# ---- the history, read from git in one batch ------------------------------------------------------

@dataclass
class Change:
    """A child commit with its own score and its parent's."""

    sha: str
    name: str  # branch (living or archived) that points at it
    agent: str  # Darwin-Agent: the lineage
    author: str  # Darwin-Author: whose memory wrote it (the agent itself before cross-agent mutation)
    generation: int
    slot: int
    operator: str
    title: str
    reasoning: str
    parent: str
    before: float | None  # parent's fitness
    after: float | None  # own fitness; None when unevaluated or failed
    status: str  # "" when not evaluated yet
    detail: str  # spread over runs, or where and why it failed
    alive: bool
    model: str = ""  # Darwin-Model: the LLM that wrote it
    cost_usd: float = 0.0  # what writing it cost (its mutation note)
    tokens: int = 0

    @property
    def delta(self) -> float | None:
        return None if self.after is None or self.before is None else self.after - self.before


@dataclass
class Attempt:
    """A proposal that never became a commit (recorded under the failures notes ref on its parent)."""

    generation: int
    slot: int
    parent_name: str
    author: str
    operator: str
    title: str
    reason: str


@dataclass
class History:
    """Read once per generation; what the generation adds while it breeds is folded in as it goes, so
    a later slot sees an earlier one's change, failure and request without reading git again."""

    changes: list[Change]
    attempts: list[Attempt]
    baseline: float | None  # the template's fitness
    requests: list[review.Request]  # every request filed for review (review.py), oldest first
    fitness: dict[str, float]  # sha -> fitness of every scored darwin commit
    docs: dict[str, fitness.FitnessDoc] = field(default_factory=dict)  # every fitness note, as read once

    def noise(self) -> float | None:
        """The typical seed spread of val bpb here: the median over genomes with two runs or more."""
        spreads = sorted(d.spread for d in self.docs.values() if d.fitness is not None and d.n > 1)
        return statistics.median(spreads) if spreads else None

    def verdict(self, c: "Change") -> str:
        """"better" or "worse" only when the delta is beyond twice the two genomes' combined seed spread
        (selection's own test), with the population's typical spread standing in for an unmeasured one."""
        d = c.delta
        if d is None:
            return ""
        typical = self.noise()
        docs = [self.docs.get(sha, fitness.UNEVALUATED) for sha in (c.sha, c.parent)]
        measured = [d.spread if d.n > 1 else typical for d in docs]
        if any(s is None for s in measured):
            return "noise not measured yet"
        bar = selection.noise_bar(*measured)
        if abs(d) <= bar:
            return f"within noise (±{bar:.4f})"
        return f"{'better' if d < 0 else 'worse'}, beyond noise (±{bar:.4f})"

    def add_child(self, child: breeding.Child, agent: str, author: str, generation: int, slot: int,
                  reasoning: str, model: str = "", usage: dict | None = None) -> None:
        parent = child.parents[0]
        self.changes.append(Change(child.sha, child.name, agent, author, generation, slot, child.operator,
                                   child.title, reasoning, parent, self.fitness.get(parent), None, "", "", True,
                                   model, *_spend(usage)))


def history(repo: Path, cfg: Config) -> History:
    """Every darwin commit (living and archived) with scores, and every failed attempt: ~12 git processes."""
    living, archived = population.living(repo), population.archived(repo)
    names = {sha: n for n, sha in archived.items()} | {sha: n for n, sha in living.items()}
    shas = git.rev_list(repo, globs=(LIVE, ARCHIVE))
    info = git.commit_info(repo, shas)
    docs = fitness.all_fitness(repo, cfg.notes.fitness)
    notes = git.notes_json(repo, cfg.notes.mutation)
    live_shas = set(living.values())
    # an approved request moves a branch forward with a merge: the genome it held keeps the name (and life)
    for name, sha in [*living.items(), *archived.items()]:
        ci = info.get(sha)
        while ci and ci.trailers.get("Darwin-Operator") == review.OPERATOR and ci.parents:
            sha = ci.parents[0]
            names.setdefault(sha, name)
            if name in living:
                live_shas.add(sha)
            ci = info.get(sha)

    def score(sha: str) -> float | None:
        return docs.get(sha, fitness.UNEVALUATED).fitness

    changes, baseline = [], None
    for sha in shas:
        ci = info.get(sha)
        if ci is None:
            continue
        if not ci.parents:
            baseline = score(sha)
        t = ci.trailers
        if "Darwin-Agent" not in t:
            continue
        doc = docs.get(sha, fitness.UNEVALUATED)
        cost_usd, tokens = _spend(notes.get(sha, {}).get("usage"))
        changes.append(Change(
            sha=sha, name=names.get(sha, sha[:10]), agent=t["Darwin-Agent"],
            author=t.get("Darwin-Author", t["Darwin-Agent"]), generation=_int(t.get("Darwin-Generation")),
            slot=_int(t.get("Darwin-Slot")), operator=t.get("Darwin-Operator", ""), title=ci.subject,
            reasoning=notes.get(sha, {}).get("reasoning") or ci.body.split("\n\nDarwin-")[0],
            parent=ci.parents[0] if ci.parents else "", before=score(ci.parents[0]) if ci.parents else None,
            after=doc.fitness, status=doc.status, detail=_detail(doc), alive=sha in live_shas,
            model=t.get("Darwin-Model", ""), cost_usd=cost_usd, tokens=tokens))
    changes.sort(key=lambda c: (c.generation, c.slot))

    slots = {(g, s.slot): s for g, step in population.generations(repo).items() if step.plan for s in step.plan.slots}
    attempts = []
    for f in breeding.failures(repo, cfg):
        slot = slots.get((f.generation, f.slot))
        parent_name = slot.parents[0].name if slot else names.get(f.parent, f.parent[:10])
        author = (slot.author or agent_of(slot.child)) if slot else agent_of(parent_name)
        attempts.append(Attempt(f.generation, f.slot, parent_name, author, f.operator, f.title, f.reason))
    attempts.sort(key=lambda a: (a.generation, a.slot))
    fit = {sha: doc.fitness for sha, doc in docs.items() if doc.fitness is not None}
    return History(changes, attempts, baseline, review.load(repo), fit, docs)


def _spend(usage: dict | None) -> tuple[float, int]:
    """(cost in USD, prompt + completion tokens) of a proposal's recorded usage; 0 for what is missing."""
    usage = usage if isinstance(usage, dict) else {}

    def number(key: str) -> float:
        return float(usage[key]) if isinstance(usage.get(key), (int, float)) else 0.0
    return number("cost_usd"), int(number("prompt_tokens") + number("completion_tokens"))


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


def _detail(doc: fitness.FitnessDoc) -> str:
    """Spread for a scored genome; stage and first error line for a failed one."""
    if not doc.n:
        return ""
    if doc.status == "ok":
        return f"±{doc.spread:.4f} over {doc.n} runs" if doc.n > 1 else ""
    bad = next((r for r in doc.runs if r.get("status") != "ok"), {})
    error = (bad.get("error") or "").strip().splitlines()
    return f"at {bad.get('stage', '?')}" + (f": {_short(error[-1], REASON_CHARS)}" if error else "")


def _short(text: str, limit: int) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= limit else text[:limit - 3] + "..."


def bpb(x: float | None) -> str:
    return "?" if x is None else f"{x:.4f}"


# ---- one agent's memory ---------------------------------------------------------------------------

@dataclass
class _Entry:
    order: tuple[int, int]
    text: str
    after: float | None  # for "best"
    badness: float  # for "worst": failures first, then the largest regressions
    tokens: int = 0


def _change_entry(c: Change, author: str, hist: History) -> _Entry:
    where = f" (on {c.agent}'s lineage)" if c.agent != author else ""
    fate = "alive" if c.alive else "pruned"
    if c.after is not None:
        d = c.delta
        verdict = "" if d is None else f" ({d:+.4f}, {hist.verdict(c)})"
        score = f"{bpb(c.before)} -> {bpb(c.after)} bpb{verdict}" + (f", {c.detail}" if c.detail else "")
        badness = d if d is not None else 0.0
    elif c.status:
        score, badness = f"{bpb(c.before)} -> {c.status} {c.detail}".rstrip(), float("inf")
    else:
        score, badness = f"{bpb(c.before)} -> not evaluated yet", float("-inf")
    text = (f"- g{c.generation} {c.name}{where} [{c.operator}] \"{c.title}\": {score}; {fate}\n"
            f"  reasoning: {_short(c.reasoning, REASONING_CHARS)}\n")
    return _Entry((c.generation, c.slot), text, c.after, badness)


def _attempt_entry(a: Attempt) -> _Entry:
    title = f" \"{a.title}\"" if a.title else ""
    text = (f"- g{a.generation} slot {a.slot} from {a.parent_name} [{a.operator}]{title}: FAILED before "
            f"training: {_short(a.reason, REASON_CHARS)}\n")
    return _Entry((a.generation, a.slot), text, None, float("inf"))


def _select(entries: list[_Entry], budget: int) -> list[_Entry]:
    """Entries that fit `budget` tokens, taking the most recent, the best and the worst in turn."""
    if sum(e.tokens for e in entries) <= budget:
        return entries
    recent = sorted(entries, key=lambda e: e.order, reverse=True)
    best = sorted((e for e in entries if e.after is not None), key=lambda e: e.after)
    worst = sorted(entries, key=lambda e: e.badness, reverse=True)
    chosen, used = set(), 0
    for trio in zip_longest(recent, best, worst):
        for e in trio:
            if e is not None and id(e) not in chosen and used + e.tokens <= budget:
                chosen.add(id(e))
                used += e.tokens
    return [e for e in entries if id(e) in chosen]


def agent_memory(repo: Path, cfg: Config, agent: str, budget_tokens: int = MEMORY_TOKENS,
                 hist: History | None = None) -> str:
    """The agent's scored trajectory, oldest first, trimmed to the most informative entries."""
    hist = hist or history(repo, cfg)
    entries = [_change_entry(c, agent, hist) for c in hist.changes if c.author == agent]
    entries += [_attempt_entry(a) for a in hist.attempts if a.author == agent and not infrastructure(a.reason)]
    entries.sort(key=lambda e: e.order)
    for e in entries:
        e.tokens = llm_tokens.count(e.text)
    kept = _select(entries, budget_tokens)
    head = [f"# Memory of agent {agent}: its scored trajectory",
            "Every change this agent wrote and every attempt of its that failed before training, oldest first. "
            "Fitness is val bits per byte (the selection split), lower is better; \"a -> b\" is the parent's score, "
            f"then the child's. The template scored {bpb(hist.baseline)}."]
    if len(kept) < len(entries):
        head.append(f"{len(entries) - len(kept)} of {len(entries)} entries are left out to fit about {budget_tokens} "
                    "tokens; kept: the best, the worst and the most recent.")
    body = "".join(e.text for e in kept) or "(no history yet: this is the agent's first change)\n"
    return "\n".join(head) + "\n" + body + answers(hist, agent)


# reasons that are not the idea's fault: caps, the endpoint, a crossover plan whose parents share one line
INFRASTRUCTURE = ("cost cap reached", "the endpoint", "cannot reach", "crossover adds nothing")


def infrastructure(reason: str) -> bool:
    """A failure of the machinery (caps, the endpoint, the plan), not of the proposed change."""
    return reason.startswith(INFRASTRUCTURE)


def answers(hist: History, agent: str) -> str:
    """The agent's latest requests and what people decided, so its next change can take them into account."""
    mine = [d for d in hist.requests if d.agent == agent][-REQUESTS:]
    if not mine:
        return ""
    lines = ["# Requests this agent made to the people running this search, and their answers"]
    for d in mine:
        decision = d.decision() or review.Event(d.state, d.reviewer, d.updated)
        if d.state == "open":
            verdict = "open, no answer yet"
        else:
            verdict = f"{d.state.upper()} by {d.reviewer}"
            if decision.merged:
                verdict += " (merged into " + ", ".join(sorted(decision.merged)) + "; scored like any change)"
            if decision.data:
                verdict += f" (data file {Path(decision.data['path']).name} recorded for a new run)"
            verdict += f": {_short(d.reason, REASON_CHARS)}" if d.reason else ""
        lines.append(f"- {d.id} (g{d.generation}, {d.kind}) \"{d.title}\": {verdict}")
        lines += [f"  comment by {e.by}: {_short(e.text, REASON_CHARS)}" for e in d.events if e.action == "comment"]
    return "\n".join(lines) + "\n"


# ---- the population: best changes and the digest ---------------------------------------------------

def improvements(hist: History) -> list[Change]:
    """Changes that beat their parent, best first, one per title."""
    better = sorted((c for c in hist.changes if c.delta is not None and c.delta < 0), key=lambda c: c.delta)
    seen, out = set(), []
    for c in better:
        if c.title not in seen:
            seen.add(c.title)
            out.append(c)
    return out


def inspiration(repo: Path, cfg: Config, k: int = INSPIRATION, hist: History | None = None,
                start: int = 0) -> list[str]:
    """The population's k best improvements from the `start`-th (sibling slots start apart, so their
    prompts differ): title, fitness change, and a short diff (one git process)."""
    ranked = improvements(hist or history(repo, cfg))
    best = ranked[start % len(ranked):][:k] if ranked else []
    if not best:
        return []
    diffs = {}
    for sha, diff in git.diffs(repo, [(c.sha, c.parent) for c in best]).items():
        lines = diff.splitlines()
        more = f"\n... ({len(lines) - DIFF_LINES} more lines)" if len(lines) > DIFF_LINES else ""
        diffs[sha] = "\n".join(lines[:DIFF_LINES]) + more
    return [f"# Best change {i} in the population: {c.title}\n{c.name}, generation {c.generation}, {c.operator}, "
            f"by {c.author}: {bpb(c.before)} -> {bpb(c.after)} bpb ({c.delta:+.4f})\n"
            f"```diff\n{diffs.get(c.sha, '')}\n```" for i, c in enumerate(best, start % max(1, len(ranked)) + 1)]


def _failure_reasons(hist: History) -> Counter:
    """Failures grouped by kind: the reason's lead ("patch does not apply") or the training status and stage."""
    reasons = Counter(a.reason.split(":", 1)[0].strip()[:80] for a in hist.attempts)
    reasons.update(f"{c.status} {c.detail.split(':', 1)[0]}".strip() for c in hist.changes
                   if c.status and c.status != "ok")
    return reasons


def evidence(hist: History) -> str:
    """The fitness evidence a digest is written from: best and worst changes, commonest failures."""
    scored = [c for c in hist.changes if c.delta is not None]
    worst = sorted((c for c in scored if c.delta > 0), key=lambda c: -c.delta)
    lines = [f"# Evidence: {len(scored)} changes scored against their parent, {len(hist.attempts)} proposals "
             f"failed before training; template {bpb(hist.baseline)} bpb",
             "## Biggest improvements (val bpb, child minus parent)"]
    lines += [f"- {c.delta:+.4f} {c.title} [{c.operator}] ({c.name}, g{c.generation})"
              for c in improvements(hist)[:8]] or ["- none yet"]
    lines.append("## Biggest regressions")
    lines += [f"- {c.delta:+.4f} {c.title} [{c.operator}] ({c.name}, g{c.generation})" for c in worst[:5]] or ["- none"]
    lines.append("## Most common failures")
    lines += [f"- {n}x {reason}" for reason, n in _failure_reasons(hist).most_common(6)] or ["- none"]
    return "\n".join(lines) + "\n"


def offline_digest(hist: History, generation: int) -> str:
    """A deterministic digest: which kinds of change helped, which did not, and what fails most."""
    tally: dict[str, list[float]] = {}
    for c in hist.changes:
        if c.delta is not None and c.operator != "crossover":
            tally.setdefault(c.title, []).append(c.delta)
    helped = sorted((t for t in tally if min(tally[t]) < 0), key=lambda t: min(tally[t]))
    hurt = sorted((t for t in tally if min(tally[t]) >= 0), key=lambda t: -max(tally[t]))
    lines = [f"Digest as of generation {generation}, built from the fitness notes (deterministic).",
             "Worked (improved on the parent):"]
    lines += [f"- {t}: better in {sum(d < 0 for d in tally[t])} of {len(tally[t])}, best {min(tally[t]):+.4f} bpb"
              for t in helped[:8]] or ["- nothing yet"]
    lines.append("Did not work (never better than the parent):")
    lines += [f"- {t}: worst {max(tally[t]):+.4f} bpb" for t in hurt[:6]] or ["- nothing yet"]
    lines.append("Most common failures:")
    lines += [f"- {n}x {reason}" for reason, n in _failure_reasons(hist).most_common(5)] or ["- none"]
    return "\n".join(lines) + "\n"


def _digest_text(repo: Path) -> str:
    """The current digest.md, or "" before the first one is written."""
    return (git.read_file(repo, DIGEST, "digest.md") or "") if git.exists(repo, DIGEST) else ""


def population_digest(repo: Path, cfg: Config) -> str:
    """The "what worked" digest as every prompt shows it."""
    text = _digest_text(repo).strip()
    return (f"# What worked in the population (digest, rewritten every {max(1, cfg.llm.digest_every)} "
            "generations)\n" + (text or "(no digest yet: it is written once there is fitness evidence)") + "\n")


def digest_generation(repo: Path) -> int | None:
    if not git.exists(repo, DIGEST):
        return None
    return _int(git.last_trailer(repo, DIGEST, "Darwin-Digest-Generation"))


def digest_usage(repo: Path) -> list[tuple[int | None, dict]]:
    """(generation, usage) of every digest rewrite that cost something, from its Darwin-Usage trailer."""
    if not git.exists(repo, DIGEST):
        return []
    gens = {sha: _int(v) for sha, _, v in git.history_trailer(repo, DIGEST, "Darwin-Digest-Generation")}
    out = []
    for sha, _, value in git.history_trailer(repo, DIGEST, "Darwin-Usage"):
        try:
            usage = json.loads(value) if value else None
        except ValueError:
            usage = None
        if isinstance(usage, dict):
            out.append((gens.get(sha), usage))
    return out


def write_digest(repo: Path, text: str, generation: int, source: str, usage: dict | None = None) -> None:
    """Add a digest commit: objects first, then a compare-and-swap move of refs/darwin/digest. What the
    rewrite cost (an LLM's tokens) goes in its Darwin-Usage trailer, so every spend is in git."""
    spend = f"Darwin-Usage: {json.dumps(usage, sort_keys=True)}\n" if usage and any(usage.values()) else ""
    message = (f"digest as of generation {generation} ({source})\n\n"
               f"Darwin-Digest-Generation: {generation}\nDarwin-Digest-Source: {source}\n{spend}")
    commit, old = git.log_commit(repo, DIGEST, {"digest.md": text}, message)
    git.update_ref(repo, DIGEST, commit, old=old, message=f"darwin-git: digest g{generation}")


def refresh_digest(repo: Path, cfg: Config, generation: int, hist: History,
                   summarize: Callable[[str, str], str | None] | None = None,
                   spent: Callable[[], dict] | None = None) -> str | None:
    """Rewrite the digest when `digest_every` generations have passed (or none exists yet and evidence does).

    `summarize(evidence, previous digest)` is an operator's rewrite; when it is absent, declines (None)
    or fails, the deterministic digest is written; `spent()` says what the rewrite cost, failed or not.
    Returns the source written ("llm" or "offline"), None if not due.
    """
    last = digest_generation(repo)
    if last is not None and generation - last < max(1, cfg.llm.digest_every):
        return None
    if not any(c.status for c in hist.changes) and not hist.attempts:
        return None  # nothing evaluated yet: no evidence to digest
    text, source = offline_digest(hist, generation), "offline"
    if summarize is not None:
        try:
            rewrite = summarize(evidence(hist), _digest_text(repo))
        except OperatorError:
            rewrite = None  # the deterministic digest stands in; the next due generation tries again
        if rewrite is not None:
            text, source = rewrite.strip() + "\n", "llm"
    write_digest(repo, text, generation, source, spent() if spent else None)
    return source


def context(repo: Path, cfg: Config, author: str, hist: History,
            budget_tokens: int = MEMORY_TOKENS, start: int = 0) -> Context:
    """What `propose` sees of the search for a mutation written by `author`, from one history.

    Records for an operator that decides by rule (the offline catalogue), and the same records
    rendered as text for a model: memory is the author's own trajectory, inspiration what the
    population learned (the digest, then the best improvements with their diffs).
    """
    tried = [Outcome(c.generation, c.title, c.delta, c.status not in ("", "ok"))
             for c in hist.changes if c.author == author]
    tried += [Outcome(a.generation, a.title, None, True) for a in hist.attempts if a.author == author]
    tried.sort(key=lambda o: o.generation)
    observed = [Outcome(c.generation, c.title, c.delta, c.status not in ("", "ok"), c.operator, c.model, c.cost_usd,
                        c.tokens, c.parent) for c in hist.changes]
    return Context(memory=agent_memory(repo, cfg, author, budget_tokens, hist),
                   inspiration=[population_digest(repo, cfg), *inspiration(repo, cfg, hist=hist, start=start)],
                   tried=tried, observed=observed, asked=[d.generation for d in hist.requests if d.agent == author])
