"""One generation, start to finish, resumable after a kill at any point.

  plan      parents and operators for every offspring slot, recorded in refs/darwin/generations
  breed     each slot becomes a child branch or a recorded failure (a slot is never done twice); a
            request the operator attaches is filed for review (review.py), never waited for
  evaluate  every genome without a fitness note is trained and scored; notes are written at once
  confirm   would-be survivors are re-run with fresh seeds until each has 1 + reevaluations runs
  select    the best `population` genomes keep their branches; the rest move to the archive
  summary   recorded in refs/darwin/generations: the generation is done
Everything it needs to resume is in git: the plan, the branches, the notes, the failure log.
"""
from __future__ import annotations

import random
import time
from dataclasses import replace
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from . import breeding, brief, fitness, git, memory, novelty, patches, population, review, selection
from .config import Config, resolved_operator
from .corpus import Corpus, prepare
from .errors import DarwinError
from .evaluator import evaluate, remove_stale_runs
from .executors import Executor, Job, executor_for
from .operators import Check, Context, Operator, OperatorError, Proposal, Smoke
from .population import agent_of
from .report import check_records, llm_usage
from .selection import Genome
from .strategies import strategy_for

NOVELTY_TRIES = 3  # proposals asked of the operator for a slot before it is recorded as not new


def operator_for(cfg: Config) -> Operator:
    """A fresh operator for one generation: an LLM operator's caps count per instance."""
    if resolved_operator(cfg) == "llm":
        from .operators.llm import LlmOperator

        return LlmOperator.from_config(cfg)
    from .operators.offline import OfflineMutator

    return OfflineMutator(learn=cfg.evolution.learn)


def pick_author(target: str, agents: list[str], mode: str, rng: random.Random) -> str:
    """Whose memory writes a mutation of `target`'s genome: its own ("self"), another living agent's
    ("other"), or either at even odds ("mixed"), so lessons cross lineages."""
    others = [a for a in agents if a != target]
    if others and (mode == "other" or (mode == "mixed" and rng.random() < 0.5)):
        return rng.choice(others)
    return target


def genome_files(repo: Path, sha: str) -> dict[str, str]:
    """The Python files of a genome commit, as an operator is given them (path -> text)."""
    return {p: git.read_file(repo, sha, p) or "" for p in git.list_files(repo, sha) if p.endswith(".py")}


def genomes(repo: Path, cfg: Config, names: dict[str, str]) -> dict[str, Genome]:
    docs = fitness.all_fitness(repo, cfg.notes.fitness)
    out = {}
    for name, sha in names.items():
        doc = docs.get(sha, fitness.UNEVALUATED)
        out[name] = Genome(name, sha, doc.fitness, doc.spread, doc.n, doc.status, doc.by_seed)
    return out


class Generation:
    def __init__(self, repo: Path, cfg: Config, console: Console | None = None,
                 operator: Operator | None = None):
        self.repo, self.cfg = repo, cfg
        self.console = console or Console(highlight=False)
        self.operator = operator
        self.corpus = None
        self.executor: Executor | None = None
        self.gate: novelty.Gate | None = None

    # ---- entry point -------------------------------------------------------------------------
    def run(self) -> population.Summary:
        """Run (or finish) the next generation; return its summary."""
        with git.lock(self.repo, "generation.lock", wait=False):
            check_records(self.repo, self.cfg)  # a record a person broke stops us before anything trains
            remove_stale_runs(self.repo)
            t0 = time.time()
            gens = population.generations(self.repo)
            if 0 not in gens or gens[0].summary is None:
                return self._baseline(t0)
            last = max(gens)
            if gens[last].summary is not None:
                g = last + 1
                plan = self._plan(g)
                population.record_generation(self.repo, plan, f"generation {g}: plan")
            else:
                g, plan = last, gens[last].plan
                if plan is None:
                    raise DarwinError(f"generation {g} has neither a plan nor a summary in {population.GENERATIONS}; "
                                      "step the log back with `git update-ref` to its last finished generation")
                self.console.print(f"[yellow]resuming generation {g}[/]")
                self.operator = self.operator or operator_for(self.cfg)
                self.operator.resume(llm_usage(self.repo, self.cfg, generation=g))  # caps hold across a kill
            hist = memory.history(self.repo, self.cfg)  # what every slot's operator is shown comes from this one read
            if self._refresh_digest(g, hist):
                hist = memory.history(self.repo, self.cfg)
            if self.cfg.evolution.novelty:
                self.gate = novelty.Gate(self.repo, [novelty.Known(
                    c.sha, c.parent, c.name, c.title,
                    "failed" if c.status not in ("", "ok") else "" if c.alive else "was pruned")
                    for c in hist.changes if c.parent])
            children = self._breed(g, plan, hist)
            candidates = {**plan.population, **children}
            self._evaluate_missing(candidates, plan)
            self._confirm(candidates)
            return self._select(g, plan, candidates, gens[0].summary, plan.started or t0)

    # ---- generation 0 ------------------------------------------------------------------------
    def _baseline(self, t0: float) -> population.Summary:
        live = population.living(self.repo)
        if not live:
            raise DarwinError("no genome branches (refs/heads/darwin/*) here; create the repo with `darwin-git init`")
        self.console.print(f"[bold]generation 0[/]: evaluating the baseline ({len(set(live.values()))} genome)")
        self._evaluate_missing(live, None)
        self._confirm(live)
        pop = genomes(self.repo, self.cfg, live)
        failed = [g for g in pop.values() if not g.ok]
        if failed:
            raise DarwinError(f"the baseline genome failed ({failed[0].status}); see `darwin-git show {failed[0].name}`"
                              " and fix the template or darwin.toml before evolving")
        summary = self._summary(0, pop, list(pop.values()), [], [], None, t0)
        population.record_generation(self.repo, summary, "generation 0: baseline evaluated")
        return summary

    # ---- plan --------------------------------------------------------------------------------
    def _plan(self, g: int) -> population.Plan:
        evo = self.cfg.evolution
        live = population.living(self.repo)
        pool = list(genomes(self.repo, self.cfg, live).values())
        rng = random.Random(f"{evo.seed}:{g}:plan")
        authors = random.Random(f"{evo.seed}:{g}:authors")  # its own stream: parent choice is unchanged
        agents = sorted({agent_of(n) for n in live})
        chosen = strategy_for(evo.strategy).parents(pool, self._root(pool), population.children_counts(self.repo),
                                                    evo, rng)
        slots = [population.Slot(
            slot, "crossover" if len(parents) == 2 else "mutation",
            [population.Parent(p.name, p.sha) for p in parents], f"{agent_of(parents[0].name)}-g{g}-{slot}",
            pick_author(agent_of(parents[0].name), agents, self.cfg.llm.target, authors))
            for slot, parents in enumerate(chosen)]
        return population.Plan(g, live, slots, time.time())

    def _root(self, pool: list[Genome]) -> Genome:
        """The baseline genome, as generation 0 measured it: best-of-N's only parent (a plan made
        before generation 0 is recorded, as a test may, takes the best living genome instead)."""
        step = population.generations(self.repo).get(0)
        if step is None or step.summary is None:
            return min(pool, key=Genome.key)
        best = step.summary.best
        return Genome(best.name, best.sha, best.fitness, best.spread, best.n, "ok")

    # ---- breed -------------------------------------------------------------------------------
    def _refresh_digest(self, g: int, hist: memory.History) -> bool:
        """Rewrite the population's "what worked" digest when due: the operator's rewrite (the LLM's),
        or the deterministic one when it declines. True when a digest was written."""
        self.operator = self.operator or operator_for(self.cfg)
        before = self.operator.usage()
        source = memory.refresh_digest(self.repo, self.cfg, g, hist, self.operator.digest,
                                       lambda: _spent_since(self.operator, before))
        if source:
            self.console.print(f"  digest of what worked rewritten ({source}): refs/darwin/digest")
        return bool(source)

    def _checker(self, parent: str) -> tuple[Check, dict[str, str | patches.Rejected]]:
        """The harness's verdict on a patch, for an operator's repair round (the reason, or None), and
        the verdicts it reached by patch text: the final proposal's tree is then taken from there, so
        a patch is validated and applied once."""
        verdicts: dict[str, str | patches.Rejected] = {}

        def check(patch: str) -> str | None:
            if patch not in verdicts:
                try:
                    verdicts[patch] = patches.apply(self.repo, parent, patch)
                except patches.Rejected as e:
                    verdicts[patch] = e
            verdict = verdicts[patch]
            return str(verdict) if isinstance(verdict, patches.Rejected) else None
        return check, verdicts

    def _breed(self, g: int, plan: population.Plan, hist: memory.History) -> dict[str, str]:
        """Make each planned child once; return {child name: sha} of those that exist."""
        made = {**population.living(self.repo), **population.archived(self.repo)}
        failed = {(f.generation, f.slot) for f in breeding.failures(self.repo, self.cfg)}
        known_trees = None
        children = {}
        for slot in plan.slots:
            name = slot.child
            if name in made:
                children[name] = made[name]
                continue
            if (g, slot.slot) in failed:
                continue
            if known_trees is None:
                everything = {**made, **plan.population}
                known_trees = {git.tree_of(self.repo, sha): n for n, sha in everything.items()}
            child = self._make(g, slot, known_trees, hist)
            if child:
                children[name] = child.sha
                known_trees[git.tree_of(self.repo, child.sha)] = name
                self.console.print(f"  + {name:<18} {child.operator:<24} {escape(child.title)}")
        return children

    def _make(self, g: int, slot: population.Slot, known_trees: dict[str, str], hist: memory.History) -> breeding.Child | None:
        parents = [p.sha for p in slot.parents]
        names = [p.name for p in slot.parents]
        rng = random.Random(f"{self.cfg.evolution.seed}:{g}:{slot.slot}")
        patch, operator, title = "", "crossover", ""
        author = slot.author or agent_of(names[0])  # plans made before authors existed: the target's own
        self.operator = self.operator or operator_for(self.cfg)
        spent_before = self.operator.usage()
        try:
            if slot.kind == "crossover":
                tree = patches.merge(self.repo, parents[0], parents[1])
                title = f"Crossover: merge {names[1]} into {names[0]}"
                reasoning = (f"Merge the changes of {names[1]} ({parents[1][:10]}) into {names[0]} "
                             f"({parents[0][:10]}): both lines improved on their ancestors in different "
                             "places; together they may add up.")
                note = {"operator": "crossover", "parents": parents, "generation": g}
                model = ""
            else:
                operator = self.operator.name
                files = genome_files(self.repo, parents[0])
                check, verdicts = self._checker(parents[0])
                skipped = []
                for _ in range(NOVELTY_TRIES if self.gate else 1):
                    shown = self.context(g, slot.slot, names[0], parents[0], author, hist,
                                         self._smoker(parents[0], check, verdicts))
                    proposal = self.operator.propose(files, shown, rng, check)
                    if proposal is None:
                        raise patches.Rejected("the operator had nothing to propose for this parent")
                    if proposal.request:
                        doc = self._file_request(g, slot, author, names[0], parents[0], proposal)
                        hist.requests += [doc] if doc not in hist.requests else []
                    patch, operator, title = proposal.patch, proposal.operator, proposal.title
                    check(proposal.patch)  # the harness's own check, whatever the operator made of it
                    tree = verdicts[proposal.patch]
                    if isinstance(tree, patches.Rejected):
                        raise tree
                    why = self.gate.verdict(parents[0], tree) if self.gate else None
                    if not why:
                        break
                    skipped.append(f"{title}: {why}")
                    if len(skipped) < NOVELTY_TRIES:  # the next try sees it as tried; the last is the slot's failure
                        hist.attempts.append(memory.Attempt(g, slot.slot, names[0], author, operator, title, why))
                    self.console.print(f"  ~ {slot.child:<18} {operator:<24} [yellow]skipped, {escape(why)}[/]")
                else:
                    raise patches.Rejected(f"{len(skipped)} proposals, none new; the last: {why}")
                reasoning, model = proposal.reasoning, proposal.model
                note = breeding.mutation_note(proposal, g, author, names[0]) | (
                    {"novelty_skipped": skipped} if skipped else {})
            if tree in known_trees:
                raise patches.Rejected(f"duplicate: same tree as {known_trees[tree]}, not evaluated again")
        except (patches.Rejected, OperatorError) as e:
            patch = e.patch or patch if isinstance(e, OperatorError) else patch
            operator = operator if slot.kind == "mutation" else "crossover"
            breeding.record_failure(self.repo, self.cfg, parents[0], g, slot.slot, str(e), operator, patch, title,
                                    usage=_spent_since(self.operator, spent_before))
            hist.attempts.append(memory.Attempt(g, slot.slot, names[0], author, operator, title, str(e)))
            self.console.print(f"  x {slot.child:<18} {operator:<24} [red]{escape(str(e))}[/]")
            return None
        trailers = {"Darwin-Agent": agent_of(names[0]),
                    "Darwin-Author": author if slot.kind == "mutation" else "", "Darwin-Parent": " ".join(parents),
                    "Darwin-Operator": operator, "Darwin-Generation": str(g), "Darwin-Model": model,
                    "Darwin-Slot": str(slot.slot)}
        child = breeding.commit_child(self.repo, self.cfg, slot.child, tree, parents, title, reasoning,
                                      trailers, note)
        hist.add_child(child, agent_of(names[0]), trailers["Darwin-Author"] or agent_of(names[0]), g, slot.slot,
                       reasoning, model, note.get("usage"))
        return child

    def context(self, g: int, slot: int, name: str, sha: str, author: str, hist: memory.History,
                smoke: Smoke | None = None) -> Context:
        """What slot `slot` of generation `g` is shown when `author` changes genome `name`: the author's memory,
        the population's lessons (siblings start at different best changes), the genome's experiment log."""
        target = brief.Target(name, sha, g, self._corpus().genome_meta())
        return replace(memory.context(self.repo, self.cfg, author, hist, start=slot),
                       brief=brief.text(self.repo, self.cfg, hist, target), smoke=smoke, parent=sha)

    def _smoker(self, parent: str, check: Check, verdicts: dict[str, str | patches.Rejected]) -> Smoke | None:
        """The check and smoke stages on a proposed patch, in the same sandbox as any evaluation, for an
        operator allowed smoke turns: None when it trains, else the stage, status and redacted error."""
        if not self.cfg.llm.smoke_turns:
            return None

        def smoke(patch: str) -> str | None:
            why = check(patch)
            if why:
                return why
            sha = git.commit_tree(self.repo, verdicts[patch], [parent], "darwin-git: smoke test of a proposed change\n")
            try:
                record = evaluate(self.repo, sha, self.cfg.evaluation, self._corpus(), test=False, smoke_only=True)
            except DarwinError:
                return None  # no sandbox for it here: the evaluation will refuse the child and record why
            return None if record.status == "ok" else f"{record.status} at the {record.stage} stage: {record.error}"
        return smoke

    def _corpus(self) -> Corpus:
        """The corpus, prepared once per generation (cached on disk after the first fetch)."""
        self.corpus = self.corpus or prepare(self.cfg.evaluation.data, self.cfg.evaluation.tokenizer)
        return self.corpus

    def _file_request(self, g: int, slot: population.Slot, author: str, genome: str, base: str, proposal: Proposal) -> dict:
        """File what the operator asked of people; the generation goes on without waiting for an answer."""
        doc = review.file(self.repo, self.cfg, proposal.request, agent=author, via=proposal.operator.split(":")[0],
                            genome=genome, base=base, generation=g, origin=f"g{g}/slot{slot.slot}")
        self.console.print(f"  ? {doc.id:<18} request ({doc.kind}) from {author}: {escape(doc.title)} "
                           f"[dim](darwin-git review {doc.id})[/]")
        return doc

    # ---- evaluate ----------------------------------------------------------------------------
    def _run_eval(self, jobs: list[Job], plan: population.Plan | None) -> None:
        """Evaluate jobs on the executor's slots, writing each note as soon as it exists."""
        if not jobs:
            return
        before = genomes(self.repo, self.cfg, plan.population if plan else {})
        parent_fit = {g.sha: g.fitness for g in before.values()}
        self.executor = self.executor or executor_for(self.cfg.executor, self.cfg.evaluation)
        runs = self.executor.run(self.repo, jobs, self.cfg.evaluation, self._corpus(), self.console)
        for job, record in runs:  # each note is written here, by the driver alone, as its run ends
            fitness.add_run(self.repo, record, self.cfg.notes.fitness)
            parent = plan.parents.get(job.name) if plan else None
            self._report(job.name, job.sha, record, parent_fit.get(parent) if parent else None)

    def _report(self, name: str, sha: str, record: dict, parent_fitness: float | None) -> None:
        info = git.commit_info(self.repo, [sha]).get(sha)
        operator = info.trailers.get("Darwin-Operator", "template") if info else ""
        bpb = f"{record['val_bpb']:.4f}" if record["val_bpb"] is not None else "-"
        delta = ""
        if record["val_bpb"] is not None and parent_fitness is not None:
            d = record["val_bpb"] - parent_fitness
            delta = f"[{'green' if d < 0 else 'red'}]{d:+.4f}[/] vs parent"
        colour = "green" if record["status"] == "ok" else "red"
        self.console.print(f"  {name:<18} {operator:<24} [{colour}]{record['status']:<14}[/] "
                           f"val bpb {bpb:<8} {delta}  (seed {record['seed']}, {record['eval_s']:.0f}s)")

    def _evaluate_missing(self, names: dict[str, str], plan: population.Plan | None) -> None:
        docs = fitness.all_fitness(self.repo, self.cfg.notes.fitness)
        seen, jobs = set(), []
        for name, sha in sorted(names.items()):
            if sha not in docs and sha not in seen:
                seen.add(sha)
                jobs.append(Job(name, sha, self.cfg.evaluation.seed, test=False))
        self._run_eval(jobs, plan)

    def _confirm(self, names: dict[str, str]) -> None:
        """Re-run would-be survivors on fresh seeds until the top `population` are all measured; these runs
        also score the test split, so every confirmed survivor has an honest report beside its val fitness."""
        want = 1 + self.cfg.evolution.reevaluations
        for _ in range(self.cfg.evolution.population * want + 1):
            pop = genomes(self.repo, self.cfg, names)
            top = {g.sha: g for g in selection.survivors(list(pop.values()), self.cfg.evolution.population)}
            # a measured survivor already trained: its check and smoke have nothing left to say
            jobs = [Job(g.name, g.sha, self.cfg.evaluation.seed + g.n, smoke=not g.ok) for g in top.values() if g.n < want]
            if not jobs:
                return
            self._run_eval(jobs, None)

    # ---- select and record -------------------------------------------------------------------
    def _select(self, g: int, plan: population.Plan, candidates: dict[str, str], baseline: population.Summary,
                t0: float) -> population.Summary:
        pop = genomes(self.repo, self.cfg, candidates)
        keep = strategy_for(self.cfg.evolution.strategy).survivors(list(pop.values()), set(plan.population.values()),
                                                                   self.cfg.evolution)
        keep_names = {k.name for k in keep}
        live = population.living(self.repo)
        # a branch an approved request moved since the plan (review.approve) stays: its merge is scored next
        losers = {n: sha for n, sha in live.items() if candidates.get(n) == sha and n not in keep_names}
        population.prune(self.repo, losers)
        fails = [f for f in breeding.failures(self.repo, self.cfg) if f.generation == g]
        summary = self._summary(g, pop, keep, sorted(losers), fails, baseline, t0)
        population.record_generation(self.repo, summary, f"generation {g}: {len(keep)} survive, "
                                     f"best {summary.best.fitness}")
        return summary

    def _summary(self, g: int, pop: dict[str, Genome], keep: list[Genome], pruned: list[str],
                 fails: list[breeding.Failure], baseline: population.Summary | None,
                 t0: float) -> population.Summary:
        def survivor(k: Genome) -> population.Survivor:
            return population.Survivor(k.name, k.sha, k.fitness, k.spread, k.n)

        best = min(keep, key=Genome.key)
        base = baseline.best.fitness if baseline else best.fitness
        return population.Summary(
            generation=g, survivors=[survivor(k) for k in keep], best=survivor(best), baseline_fitness=base,
            delta_vs_baseline=round(best.fitness - base, 6), wall_s=round(time.time() - t0, 1), pruned=pruned,
            failures=[population.Unbred(f.slot, f.reason, f.operator) for f in fails],
            evaluated={n: population.Evaluated(x.fitness, x.status) for n, x in sorted(pop.items())})


def last_finished(repo: Path) -> int:
    """The newest generation with a summary, or -1 before the baseline is evaluated."""
    return max((g for g, step in population.generations(repo).items() if step.summary), default=-1)


def _spent_since(operator: Operator, before: dict) -> dict:
    """Tokens, requests and cost an operator spent since `before`: a failed proposal still cost money."""
    now = operator.usage()
    return {k: round(v - before.get(k, 0), 6) if isinstance(v, float) else v - before.get(k, 0) for k, v in now.items()}
