"""Requests: what agents and people ask of whoever runs a search, reviewed like pull requests.

Two places in git, both readable with plain git:
  refs/darwin/requests/<id>   the proposed change, when there is one: a commit whose parent is the
                              genome it was written against (validated like a mutation, create-only)
  refs/darwin/requests-log    a commit chain whose tree holds <id>.json, one document per request.
                              Filing, every comment and every decision is one more commit, and the
                              document's `events` are appended, never rewritten:
                              `git show refs/darwin/requests-log:r1.json`,
                              `git log -p refs/darwin/requests-log -- r1.json`
A data request has no commit, only its document. Approving merges the change into living genomes
with merge commits (an agent keeps its branch name): every target branch and the log move in one
`update-ref --stdin` transaction, so a conflict with any target moves nothing. Nothing here blocks a
generation; the answers reach the requesting agent through its memory (memory.py).
"""
from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from . import fitness, git, patches, population
from .config import Config
from .errors import DarwinError
from .operators import KINDS, RequestDraft
from .population import agent_of

LOG = "refs/darwin/requests-log"
REFS = "refs/darwin/requests/"
LOCK = "requests.lock"  # serializes writers: a generation filing while a person reviews
OPERATOR = "request"  # Darwin-Operator of an approval's merge commit


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _number(rid: str) -> int:
    return int(rid[1:]) if rid[1:].isdigit() else 0


def _one_line(text: str) -> str:
    return " ".join(text.split())


# ---- reading ------------------------------------------------------------------------------------------

# What every request document holds (as `file` writes it): each reader relies on these.
FIELDS = {"id": (str,), "kind": (str,), "title": (str,), "rationale": (str,), "agent": (str,), "via": (str,),
          "genome": (str,), "base": (str,), "commit": (str,), "to": (list,), "evidence": (dict,),
          "generation": (int,), "state": (str,), "reviewer": (str,), "reason": (str,), "events": (list,)}
EVIDENCE = {key: (str,) for key in ("genome", "sha", "status", "cited")} | {
    "fitness": (int, float, type(None)), "spread": (int, float), "runs": (int,)}  # typed reads cast "2.5"


@dataclass(frozen=True)
class Evidence:
    """The fitness a request rests on when it is filed, beside what its requester cites."""

    genome: str
    sha: str
    fitness: float | None
    spread: float
    runs: int
    status: str
    cited: str


@dataclass(frozen=True)
class Event:
    """One entry of a request's history: filed, comment, approved or rejected."""

    action: str
    by: str
    time: str
    reason: str = ""
    text: str = ""  # a comment's
    merged: dict[str, str] = field(default_factory=dict)  # an approval's {branch: merge commit}
    data: dict | None = None  # an approved data request's file: path, sha256, bytes

    def json(self) -> dict:
        """As written to the log: what the event holds, no empty fields (decisions always keep a reason)."""
        kept = {"action", "by", "time"} | ({"reason"} if self.action in ("approved", "rejected") else set())
        return {k: v for k, v in asdict(self).items() if k in kept or v}


@dataclass(frozen=True)
class Request:
    """One request's document, refs/darwin/requests-log:<id>.json."""

    id: str
    kind: str
    title: str
    rationale: str
    agent: str
    via: str  # "llm", "offline" or "person"
    genome: str
    base: str
    commit: str  # the proposed change, "" for a request without a patch
    to: list[str]
    evidence: Evidence
    generation: int
    state: str  # open, approved, rejected
    reviewer: str
    reason: str
    events: list[Event]
    origin: str = ""  # "g3/slot1" for an agent's: filing is idempotent
    created: str = ""
    updated: str = ""

    def json(self) -> dict:
        return {**asdict(self), "events": [e.json() for e in self.events]}

    def decision(self) -> Event | None:
        """The event that decided it, None while it is open."""
        return next((e for e in reversed(self.events) if e.action == self.state), None)


def load(repo: Path) -> list[Request]:
    """Every request, oldest first (three git processes whatever their number); a document that is not
    what `file` wrote is a one-line error naming it and its repair."""
    requests = []
    for path, doc in git.read_log_json(repo, LOG).items():
        problem = _problem(doc, path)
        if not problem:
            try:
                requests.append(git.typed(Request, doc))
                continue
            except ValueError as e:
                problem = f"is not a request record ({e})"
        raise git.corrupt_log(repo, LOG, path, problem)
    return sorted(requests, key=lambda r: _number(r.id))


def _problem(doc: dict, path: str) -> str:
    """What is wrong with a request document read from `path`, or ""."""
    if problem := git.shape(doc, FIELDS):
        return problem
    if f"{doc['id']}.json" != path:
        return f"holds request {doc['id']!r}, not {path.removesuffix('.json')!r}"
    if problem := git.shape(doc["evidence"], EVIDENCE):
        return f"evidence {problem}"
    return ""  # each event is checked by the typed read (git.typed): its fields and their types


def open_requests(repo: Path) -> list[Request]:
    return [d for d in load(repo) if d.state == "open"]


def get(repo: Path, rid: str) -> Request:
    doc = next((d for d in load(repo) if d.id == rid), None)
    if doc is None:
        raise DarwinError(f"no request {rid!r} here; `darwin-git requests --all` lists them")
    return doc


def diff(repo: Path, doc: Request, stat: bool = False) -> str:
    """The change against the genome it was written for (its `--stat` with stat=True)."""
    return git.diff(repo, doc.base, _commit(doc), stat=stat)


def format_patch(repo: Path, doc: Request) -> str:
    """The change as `git format-patch` writes it: mail headers, message, diff; `git am` takes it."""
    return git.format_patch(repo, _commit(doc))


def _commit(doc: Request) -> str:
    if not doc.commit:
        raise DarwinError(f"request {doc.id} has no patch: it asks for {doc.kind}, not for a change")
    return doc.commit


def reviewer(repo: Path) -> str:
    """Who is deciding: git's committer name (user.name or GIT_COMMITTER_NAME)."""
    return git.committer_name(repo)


# ---- filing -------------------------------------------------------------------------------------------

def evidence(repo: Path, cfg: Config, genome: str, sha: str, cited: str = "") -> Evidence:
    """The fitness the request rests on, from the genome's note, beside what the requester cites."""
    doc = fitness.of(repo, cfg.notes.fitness, sha)
    return Evidence(genome, sha, doc.fitness, doc.spread, doc.n, doc.status or "unevaluated", cited)


def file(repo: Path, cfg: Config, draft: RequestDraft, *, agent: str, via: str, genome: str, base: str,
         generation: int, origin: str = "", strict: bool = False) -> Request:
    """File a request; its patch, if any, is validated on `base` like a mutation and committed.

    A patch that fails is an error for a person (`strict`), and for an agent is left out with the
    reason in the rationale, so the request is still heard. `origin` (e.g. "g3/slot1") makes filing
    idempotent: a generation resumed after a kill does not file twice.
    """
    if draft.kind not in KINDS:
        raise DarwinError(f"request kind must be one of {', '.join(KINDS)}, got {draft.kind!r}")
    if not draft.title.strip():
        raise DarwinError("a request needs a title: one line saying what it asks for")
    tree, rationale = None, draft.rationale.strip()
    if draft.patch:
        try:
            tree = patches.apply(repo, base, draft.patch)
        except patches.Rejected as e:
            if strict:
                raise DarwinError(f"the change cannot be filed: {_one_line(str(e))}") from None
            rationale += f"\n\n(The proposed edits were left out: {e})"
    with git.lock(repo, LOCK):
        docs = load(repo)
        same = next((d for d in docs if origin and d.origin == origin), None)
        if same:
            return same
        rid = f"r{max((_number(d.id) for d in docs), default=0) + 1}"
        commit, commands = "", []
        if tree:
            trailers = {"Darwin-Request": rid, "Darwin-Requested-By": agent, "Darwin-Kind": draft.kind}
            commit = git.commit_tree(repo, tree, [base], git.commit_message(draft.title, rationale or draft.title,
                                                                          trailers))
            commands.append(f"create {REFS}{rid} {commit}")
        now = _now()
        doc = Request(rid, draft.kind, _one_line(draft.title)[:72], rationale, agent, via, genome, base, commit,
                      [genome], evidence(repo, cfg, genome, base, draft.evidence), generation, "open", "", "",
                      [Event("filed", agent, now)], origin, now, now)
        _save(repo, doc, f"{rid}: {draft.kind} request filed by {agent}", refs=commands)
    return doc


def propose(repo: Path, cfg: Config, source: str, title: str, to: str, rationale: str, kind: str,
            by: str) -> Request:
    """A person's change as a request: from a patch file, or a branch's changes since it left `to`."""
    living = population.living(repo)
    name = to.removeprefix("darwin/")
    genomes = [name] if name in living else sorted(b for b in living if agent_of(b) == name)
    if len(genomes) != 1:
        raise DarwinError(f"--to must name one living genome; {name!r} matches "
                          f"{', '.join(genomes) or 'none'} (living: {', '.join(sorted(living)) or 'none'})")
    genome = genomes[0]
    base = living[genome]
    if Path(source).is_file():  # `git format-patch` output too: its "-- \n<git version>" signature is cut
        patch = re.sub(r"\n-- \n\d[\w.+-]*\n*\Z", "\n", Path(source).read_text(errors="replace"))
    elif git.exists(repo, source):
        patch = git.diff(repo, git.merge_base(repo, base, source), source, full_index=True)
    else:
        raise DarwinError(f"--from {source!r} is neither a patch file nor a branch or commit here")
    draft = RequestDraft(kind, title, rationale or title, "", patch)
    return file(repo, cfg, draft, agent=by, via="person", genome=genome, base=base,
                generation=max(_current_generation(repo), 0), strict=True)


def _current_generation(repo: Path) -> int:
    """The newest generation planned (-1 before the baseline)."""
    return max(population.generations(repo), default=-1)


# ---- deciding -----------------------------------------------------------------------------------------

def approve(repo: Path, cfg: Config, rid: str, by: str, reason: str = "", to: tuple[str, ...] = (),
            data: Path | None = None) -> Request:
    """Approve: merge the change into the targets (all or none) and record who, why and, for a data
    request, which file (path and sha256: the running search keeps its corpus)."""
    with git.lock(repo, LOCK):
        doc = _undecided(repo, rid)
        merges: dict[str, str] = {}
        moves: dict[str, tuple[str, str]] = {}
        if doc.commit:
            targets = _targets(repo, to or tuple(doc.to))
            problems = []
            generation = _current_generation(repo) + 1  # the first generation whose plan holds the merges
            for branch, tip in sorted(targets.items()):
                try:
                    merges[branch] = _merge(repo, doc, branch, tip, generation, by, reason)
                except patches.Rejected as e:
                    problems.append(f"darwin/{branch}: {_one_line(str(e))}")
            if problems:
                raise DarwinError(f"request {rid} conflicts with {'; '.join(problems)}; nothing was merged "
                                  "(choose other targets with --to, or reject it)")
            moves = {b: (targets[b], sha) for b, sha in merges.items()}
        elif to:
            raise DarwinError(f"request {rid} has no patch to merge; approve it without --to")
        event = Event("approved", by, _now(), reason, merged=merges, data=None if data is None else _data_file(data))
        return _decide(repo, doc, "approved", event, moves)


def reject(repo: Path, rid: str, by: str, reason: str) -> Request:
    if not reason.strip():
        raise DarwinError("a rejection needs --reason: the requester learns from it")
    with git.lock(repo, LOCK):
        return _decide(repo, _undecided(repo, rid), "rejected", Event("rejected", by, _now(), reason))


def comment(repo: Path, rid: str, by: str, text: str) -> Request:
    if not text.strip():
        raise DarwinError("an empty comment says nothing; give its text")
    with git.lock(repo, LOCK):
        doc = get(repo, rid)
        event = Event("comment", by, _now(), text=text)
        doc = replace(doc, events=[*doc.events, event], updated=event.time)
        _save(repo, doc, f"{rid}: comment by {by}")
    return doc


def _undecided(repo: Path, rid: str) -> Request:
    doc = get(repo, rid)
    if doc.state != "open":
        raise DarwinError(f"request {rid} was already {doc.state} by {doc.reviewer}; "
                          f"comment on it with `darwin-git comment {rid} ...`")
    return doc


def _decide(repo: Path, doc: Request, state: str, event: Event,
            moves: dict[str, tuple[str, str]] | None = None) -> Request:
    doc = replace(doc, state=state, reviewer=event.by, reason=event.reason, updated=event.time,
                  events=[*doc.events, event])
    _save(repo, doc, f"{doc.id}: {state} by {event.by}", moves=moves)
    return doc


def _save(repo: Path, doc: Request, message: str, refs: Sequence[str] = (),
          moves: dict[str, tuple[str, str]] | None = None) -> None:
    """Write the document as a new log commit; move the log, `refs` (the request's own) and the genome
    branches an approval merged into (`moves`, through population, their owner) in one transaction."""
    text = json.dumps(doc.json(), indent=1, sort_keys=True) + "\n"
    commit, old = git.log_commit(repo, LOG, {f"{doc.id}.json": text}, message)
    population.advance(repo, moves or {}, [*refs, f"update {LOG} {commit} {old or git.ZERO}"])


def _targets(repo: Path, names: tuple[str, ...]) -> dict[str, str]:
    """{branch: tip} for each name: `all`, a living genome, or an agent (all its living genomes)."""
    living = population.living(repo)
    chosen = {}
    for name in (n.removeprefix("darwin/") for n in names):
        if name == "all":
            hits = living
        elif name in living:
            hits = {name: living[name]}
        else:
            hits = {b: sha for b, sha in living.items() if agent_of(b) == agent_of(name)}
        if not hits:
            raise DarwinError(f"no living genome or agent named {name!r} (living: "
                              f"{', '.join(sorted(living)) or 'none'}); choose targets with --to NAME or --to all")
        chosen.update(hits)
    return chosen


def _merge(repo: Path, doc: Request, branch: str, tip: str, generation: int, by: str, reason: str) -> str:
    """A merge commit of `tip` and the change. On a genome that moved on from the request's base the
    change is first applied to the tip (a commit whose parent is the tip), so the merge brings exactly
    the change, never the requester's other history. Rejected when it does not apply, or when what it
    would commit is not genome text (checked here too: the log that names the commit is plain git)."""
    side = doc.commit
    if tip == doc.base:
        patches.check_tree(repo, git.tree_of(repo, tip), git.tree_of(repo, side))
    else:
        tree = patches.apply(repo, tip, git.diff(repo, doc.base, doc.commit, full_index=True))
        side = git.commit_tree(repo, tree, [tip], git.commit_message(
            f"{doc.title} (request {doc.id} on darwin/{branch})", doc.rationale,
            {"Darwin-Request": doc.id, "Darwin-Requested-By": doc.agent, "Darwin-Kind": doc.kind}))
    agent = agent_of(branch)
    trailers = {"Darwin-Agent": agent, "Darwin-Author": doc.agent if doc.via != "person" else agent,
                "Darwin-Parent": f"{tip} {side}", "Darwin-Operator": OPERATOR,
                "Darwin-Generation": str(generation), "Darwin-Request": doc.id,
                "Darwin-Reviewer": by}
    body = (f"{doc.rationale}\n\nRequested by {doc.agent} ({doc.via}); approved by {by}"
            + (f": {reason}" if reason else "."))
    return git.commit_tree(repo, git.tree_of(repo, side), [tip, side],
                           git.commit_message(f"Merge request {doc.id}: {doc.title}", body, trailers))


def _data_file(path: Path) -> dict:
    if not path.is_file():
        raise DarwinError(f"data file {str(path)!r} not found")
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return {"path": str(path.resolve()), "sha256": digest.hexdigest(), "bytes": path.stat().st_size}
