"""Search strategies side by side at an equal number of child evaluations.

For each seed, one evolution repo evaluates generation 0 (the baseline is the same for every
strategy), then a copy of it runs each strategy until it has bred `--evaluations` children. It
prints, per strategy, the mean ± standard error over seeds of the best genome's gain over
generation 0 on the selection split (val bpb; negative is better) and on the test split (the
confirmation runs score it; selection never reads it), the train runs spent (re-evaluations
included), failed breedings and wall time; `--out` writes the same as JSON. `default` is whatever
[evolution] ships with (config.Evolution()), so the benchmark always measures the shipped search.

Strategies and seeds run as parallel jobs, one core each (`--jobs`, default: every core): the budget
is tokens, so a run's fitness does not depend on what shares the machine, only its wall time does.
Run it alone on the machine all the same: other work slows every job.

    python benchmarks/search_compare.py                       # default, greedy, random: 24 children, 3 seeds
    python benchmarks/search_compare.py --evaluations 12 --seeds 2 --budget 160000tokens
    python benchmarks/search_compare.py --strategies greedy,random,climb,climb+learn+novelty
    python benchmarks/search_compare.py --seeds 1 --first-seed 1338 --out s1338.json   # seeds run apart ...
    python benchmarks/search_compare.py --tables s1337.json s1338.json s1339.json     # ... one table
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path

from rich.console import Console

from darwin_git import config, fitness, population
from darwin_git.generation import Generation


@dataclass
class Outcome:
    strategy: str
    seed: int
    val_gain: float
    test_gain: float | None
    children: int
    train_runs: int
    failures: int
    steps: int
    wall_s: float


SWITCHES = ("novelty", "learn", "paired")


def pin(cores: "multiprocessing.Queue") -> None:
    """A job's process initializer: take `slots` cores of its own, which its evaluations then inherit."""
    os.sched_setaffinity(0, cores.get())


def baseline(root: Path, seed: int, args: argparse.Namespace) -> Path:
    """A fresh repo for `seed` with generation 0 evaluated, to be copied for each strategy."""
    cfg = config.Config()
    cfg = replace(cfg, evolution=replace(cfg.evolution, seed=seed, population=args.population,
                                         offspring=args.offspring, reevaluations=args.reevaluations),
                  evaluation=replace(cfg.evaluation, budget=args.budget, seed=seed, data=args.data or "shakespeare",
                                     smoke=args.smoke),
                  executor=replace(cfg.executor, slots=args.slots))
    repo = root / f"seed{seed}-baseline"
    population.init_repo(repo, config.check(cfg))
    Generation(repo, cfg, Console(quiet=True)).run()
    return repo


def evolution_for(strategy: str, evo: config.Evolution, args: argparse.Namespace) -> config.Evolution:
    """[evolution] for one table entry: `default` as shipped; otherwise NAME with every switch off but those
    named ("climb+learn+novelty"), greedy as (1 + 1), the others at --population and --offspring."""
    name, *switches = strategy.split("+")
    unknown = set(switches) - set(SWITCHES)
    if unknown:
        raise SystemExit(f"unknown switch {' '.join(sorted(unknown))} in {strategy!r}: use +novelty, +learn, +paired")
    if name == "default":
        shipped = config.Evolution()
        return replace(evo, **{k: getattr(shipped, k) for k in ("strategy", "population", "offspring", *SWITCHES)},
                       **{k: True for k in switches})
    if name not in config.STRATEGIES:
        raise SystemExit(f"unknown strategy {name!r} in {strategy!r}: use default or one of {', '.join(config.STRATEGIES)}")
    greedy = name == "greedy"
    return replace(evo, strategy=name, population=1 if greedy else args.population,
                   offspring=1 if greedy else args.offspring, **{k: k in switches for k in SWITCHES})


def run_strategy(base: Path, strategy: str, seed: int, args: argparse.Namespace) -> Outcome:
    repo = base.with_name(f"seed{seed}-{strategy}")
    shutil.copytree(base, repo, symlinks=True)
    cfg = config.load(repo)
    cfg = replace(cfg, evolution=evolution_for(strategy, cfg.evolution, args))
    (repo / "darwin.toml").write_text(cfg.to_toml())
    console = Console(quiet=True)
    t0, steps = time.time(), 0
    while bred(repo) < args.evaluations:
        summary = Generation(repo, cfg, console).run()
        steps += 1
    gens = population.generations(repo)
    base_doc = fitness.of(repo, cfg.notes.fitness, gens[0].summary.best.sha)
    best_doc = fitness.of(repo, cfg.notes.fitness, summary.best.sha)
    docs = fitness.all_fitness(repo, cfg.notes.fitness)
    test_gain = None if best_doc.test is None or base_doc.test is None else best_doc.test - base_doc.test
    return Outcome(strategy, seed, summary.best.fitness - base_doc.fitness, test_gain, bred(repo),
                   sum(d.n for sha, d in docs.items() if sha != gens[0].summary.best.sha),
                   sum(len(s.summary.failures) for g, s in gens.items() if g and s.summary), steps,
                   round(time.time() - t0, 1))


def bred(repo: Path) -> int:
    """Children planned so far (made or failed): the budget every strategy is held to."""
    return sum(len(step.plan.slots) for g, step in population.generations(repo).items() if g and step.plan)


def mean_se(values: list[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else math.nan
    return statistics.fmean(values), se


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--strategies", default="default,greedy,random",
                    help=f"comma-separated: default (as shipped) or one of {', '.join(config.STRATEGIES)}; "
                         "NAME+novelty turns the novelty gate on for that entry, +learn the offline operator's "
                         "recipe bandit, +paired greedy's seed-by-seed promotion test")
    ap.add_argument("--evaluations", type=int, default=24, help="children bred per strategy and seed")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=1337, help="seeds run are first-seed, first-seed + 1, ...")
    ap.add_argument("--tables", type=Path, nargs="+", help="print one table from earlier --out files (seeds run "
                                                           "apart, e.g. one process or machine each) and stop")
    ap.add_argument("--budget", default="20800tokens")
    ap.add_argument("--population", type=int, default=4, help="evolution and random (greedy is 1 + 1)")
    ap.add_argument("--offspring", type=int, default=4, help="evolution and random (greedy: 1)")
    ap.add_argument("--reevaluations", type=int, default=1)
    ap.add_argument("--slots", type=int, default=1, help="evaluations at once within one job")
    ap.add_argument("--jobs", type=int, default=0, help="strategies and seeds run at once, --slots cores each "
                                                        "(0: as many as the machine's cores hold)")
    ap.add_argument("--smoke", action=argparse.BooleanOptionalAction, default=False,
                    help="run the smoke stage before each training run (it changes no fitness, only how "
                         "early a broken child fails; off, the benchmark takes a third less time)")
    ap.add_argument("--data", help="corpus file (default: the Shakespeare corpus)")
    ap.add_argument("--out", type=Path, help="write the outcomes and the table as JSON here")
    args = ap.parse_args()
    if args.tables:
        runs = [json.loads(path.read_text()) for path in args.tables]
        outcomes = [Outcome(**o) for doc in runs for o in doc["outcomes"]]
        strategies = list(dict.fromkeys(o.strategy for o in outcomes))
        return report(outcomes, strategies, runs[0]["args"], None, sum(float(d["wall_s"]) for d in runs), args.out)
    strategies = args.strategies.split(",")
    for strategy in strategies:
        evolution_for(strategy, config.Evolution(), args)  # a misspelt entry fails now, not after the baselines
    if args.slots < 1 or args.jobs < 0:
        raise SystemExit("--slots must be 1 or more and --jobs 0 (every core) or more")
    cpus = sorted(os.sched_getaffinity(0))
    jobs = args.jobs = args.jobs or max(1, len(cpus) // args.slots)
    cores = multiprocessing.Queue()
    for j in range(jobs):
        cores.put(tuple(cpus[(j * args.slots + k) % len(cpus)] for k in range(args.slots)))
    root = Path(tempfile.mkdtemp(prefix="darwin-search-"))
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    t0, outcomes = time.time(), []
    with ProcessPoolExecutor(jobs, initializer=pin, initargs=(cores,)) as pool:
        bases = dict(zip(seeds, pool.map(baseline, [root] * len(seeds), seeds, [args] * len(seeds))))
        runs = [pool.submit(run_strategy, bases[seed], strategy, seed, args) for seed in seeds for strategy in strategies]
        for done in as_completed(runs):
            o = done.result()
            outcomes.append(o)
            print(f"seed {o.seed} {o.strategy:<20} val gain {o.val_gain:+.4f} test gain "
                  f"{o.test_gain if o.test_gain is None else f'{o.test_gain:+.4f}'} runs {o.train_runs} "
                  f"({time.time() - t0:.0f}s)", flush=True)
    outcomes.sort(key=lambda o: (strategies.index(o.strategy), o.seed))
    report(outcomes, strategies, {k: str(v) for k, v in vars(args).items()}, root, time.time() - t0, args.out)


def report(outcomes: list[Outcome], strategies: list[str], args: dict, root: Path | None, wall_s: float,
           out: Path | None) -> None:
    """The table: mean ± SE over seeds per strategy; the same as JSON to `out`."""
    table = []
    for strategy in strategies:
        mine = [o for o in outcomes if o.strategy == strategy]
        val, val_se = mean_se([o.val_gain for o in mine])
        test, test_se = mean_se([o.test_gain for o in mine if o.test_gain is not None])
        table.append({"strategy": strategy, "val_gain": val, "val_se": val_se, "test_gain": test, "test_se": test_se,
                      "children": statistics.fmean(o.children for o in mine),
                      "train_runs": statistics.fmean(o.train_runs for o in mine),
                      "failures": statistics.fmean(o.failures for o in mine),
                      "wall_s": statistics.fmean(o.wall_s for o in mine)})
    seeds = sorted({o.seed for o in outcomes})
    print(f"\n{args['evaluations']} children per strategy, seeds {', '.join(map(str, seeds))}, budget {args['budget']}, "
          f"{args.get('jobs', '1')} job(s) of {args['slots']} slot(s); gain = best - generation 0 (bpb, lower is better)"
          + (f"; repos in {root}" if root else ""))
    print(f"{'strategy':<20} {'val gain':>18} {'test gain':>18} {'children':>8} {'runs':>6} {'failed':>6} {'wall':>7}")
    for r in table:
        print(f"{r['strategy']:<20} {r['val_gain']:>+9.4f} ± {r['val_se']:<6.4f} {r['test_gain']:>+9.4f} ± "
              f"{r['test_se']:<6.4f} {r['children']:>8.1f} {r['train_runs']:>6.1f} {r['failures']:>6.1f} "
              f"{r['wall_s']:>6.0f}s")
    print(f"total wall time {wall_s:.0f}s")
    if out:
        out.write_text(json.dumps({"args": args, "table": table, "wall_s": round(wall_s, 1),
                                   "outcomes": [o.__dict__ for o in outcomes]}, indent=1))


if __name__ == "__main__":
    main()
