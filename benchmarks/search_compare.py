"""Search strategies side by side at an equal number of child evaluations.

For each seed, one evolution repo evaluates generation 0 (the baseline is the same for every
strategy), then a copy of it runs each strategy until it has bred `--evaluations` children. It
prints, per strategy, the mean ± standard error over seeds of the best genome's gain over
generation 0 on the selection split (val bpb; negative is better) and on the test split (the
confirmation runs score it; selection never reads it), the train runs spent (re-evaluations
included), failed breedings and wall time; `--out` writes the same as JSON. Run it alone on the
machine: parallel work halves every figure.

    python benchmarks/search_compare.py                       # 24 evaluations, 3 seeds, 20800 tokens
    python benchmarks/search_compare.py --evaluations 12 --seeds 2 --budget 160000tokens
    python benchmarks/search_compare.py --strategies greedy,random,climb,climb+learn+novelty
    python benchmarks/search_compare.py --seeds 1 --first-seed 1338 --out s1338.json   # seeds run apart ...
    python benchmarks/search_compare.py --tables s1337.json s1338.json s1339.json     # ... one table
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import tempfile
import time
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


def baseline(root: Path, seed: int, args: argparse.Namespace, console: Console) -> Path:
    """A fresh repo for `seed` with generation 0 evaluated, to be copied for each strategy."""
    cfg = config.Config()
    cfg = replace(cfg, evolution=replace(cfg.evolution, seed=seed, population=args.population,
                                         offspring=args.offspring, reevaluations=args.reevaluations),
                  evaluation=replace(cfg.evaluation, budget=args.budget, seed=seed, data=args.data or "shakespeare"),
                  executor=replace(cfg.executor, slots=args.slots))
    repo = root / f"seed{seed}-baseline"
    population.init_repo(repo, config.check(cfg))
    Generation(repo, cfg, console).run()
    return repo


def run_strategy(base: Path, strategy: str, seed: int, args: argparse.Namespace, console: Console) -> Outcome:
    repo = base.with_name(f"seed{seed}-{strategy}")
    shutil.copytree(base, repo, symlinks=True)
    cfg = config.load(repo)
    name, *switches = strategy.split("+")  # "climb+learn+novelty": the strategy with those switches on
    unknown = set(switches) - {"novelty", "learn", "paired"}
    if unknown:
        raise SystemExit(f"unknown switch {' '.join(sorted(unknown))} in {strategy!r}: use +novelty, +learn, +paired")
    greedy = name == "greedy"
    cfg = replace(cfg, evolution=replace(cfg.evolution, strategy=name, population=1 if greedy else args.population,
                                         offspring=1 if greedy else args.offspring, novelty="novelty" in switches,
                                         learn="learn" in switches, paired="paired" in switches))
    (repo / "darwin.toml").write_text(cfg.to_toml())
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
    ap.add_argument("--strategies", default=",".join(config.STRATEGIES),
                    help="comma-separated; NAME+novelty turns the novelty gate on for that entry, +learn the "
                         "offline operator's recipe bandit, +paired greedy's seed-by-seed promotion test")
    ap.add_argument("--evaluations", type=int, default=24, help="children bred per strategy and seed")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=1337, help="seeds run are first-seed, first-seed + 1, ...")
    ap.add_argument("--tables", type=Path, nargs="+", help="print one table from earlier --out files (seeds run "
                                                           "apart, e.g. one process or machine each) and stop")
    ap.add_argument("--budget", default="20800tokens")
    ap.add_argument("--population", type=int, default=4, help="evolution and random (greedy is 1 + 1)")
    ap.add_argument("--offspring", type=int, default=4, help="evolution and random (greedy: 1)")
    ap.add_argument("--reevaluations", type=int, default=1)
    ap.add_argument("--slots", type=int, default=1, help="evaluations at once (0: all the machine's)")
    ap.add_argument("--data", help="corpus file (default: the Shakespeare corpus)")
    ap.add_argument("--out", type=Path, help="write the outcomes and the table as JSON here")
    args = ap.parse_args()
    if args.tables:
        runs = [json.loads(path.read_text()) for path in args.tables]
        outcomes = [Outcome(**o) for doc in runs for o in doc["outcomes"]]
        strategies = list(dict.fromkeys(o.strategy for o in outcomes))
        return report(outcomes, strategies, runs[0]["args"], None, sum(float(d["wall_s"]) for d in runs), args.out)
    strategies = args.strategies.split(",")
    console = Console(highlight=False, quiet=True)
    root = Path(tempfile.mkdtemp(prefix="darwin-search-"))
    t0, outcomes = time.time(), []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        base = baseline(root, seed, args, console)
        for strategy in strategies:
            outcomes.append(run_strategy(base, strategy, seed, args, console))
            o = outcomes[-1]
            print(f"seed {o.seed} {o.strategy:<20} val gain {o.val_gain:+.4f} test gain "
                  f"{o.test_gain if o.test_gain is None else f'{o.test_gain:+.4f}'} runs {o.train_runs} "
                  f"({time.time() - t0:.0f}s)", flush=True)
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
          f"{args['slots'] if args['slots'] != '0' else 'all'} slot(s); gain = best - generation 0 (bpb, lower is better)"
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
