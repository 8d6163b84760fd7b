"""End-to-end evolution benchmark: does the offline loop improve on the baseline, and at what cost?

Creates a fresh evolution repo (default Shakespeare corpus), evaluates generation 0, runs K
generations, and prints the best test bits-per-byte of each generation against generation 0
with its seed spread, plus the total wall time. Everything it reports is also in the repo's git
history (refs/darwin/generations), so a run can be re-read with plain git afterwards.

    python benchmarks/evolve_run.py --generations 5 --population 4 --budget 60s
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from rich.console import Console

from darwin_git import population
from darwin_git.config import Config
from darwin_git.generation import Generation


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--generations", type=int, default=5)
    ap.add_argument("--population", type=int, default=4)
    ap.add_argument("--budget", default="60s")
    ap.add_argument("--reevaluations", type=int, default=1)
    ap.add_argument("--dir", type=Path, help="where to create the repo (default: a temp dir, kept)")
    args = ap.parse_args()

    repo = args.dir or Path(tempfile.mkdtemp(prefix="darwin-bench-")) / "demo"
    cfg = Config()
    cfg.evolution.population = cfg.evolution.offspring = args.population
    cfg.evolution.reevaluations = args.reevaluations
    cfg.evaluation.budget = args.budget
    population.init_repo(repo, cfg)
    console = Console(highlight=False)
    t0 = time.time()
    rows = []
    for _ in range(args.generations + 1):
        s = Generation(repo, cfg, console).run()
        rows.append((s.generation, s.best.name, s.best.fitness, s.best.spread, s.delta_vs_baseline,
                     len(s.failures), time.time() - t0))
        console.print(f"[bold]gen {rows[-1][0]}[/] best {rows[-1][2]:.4f} delta {rows[-1][4]:+.4f} "
                      f"elapsed {rows[-1][6]:.0f}s")
    print(f"\nrepo: {repo}")
    print(f"{'gen':>3}  {'best genome':<16} {'test bpb':>9} {'spread':>7} {'vs gen 0':>9} {'failed':>6} {'elapsed':>8}")
    for g, name, fit, spread, delta, failed, elapsed in rows:
        print(f"{g:>3}  {name:<16} {fit:>9.4f} {spread:>7.4f} {delta:>+9.4f} {failed:>6} {elapsed:>7.0f}s")
    print(f"total wall time: {time.time() - t0:.0f}s "
          f"({args.generations} generations, population {args.population}, budget {args.budget})")


if __name__ == "__main__":
    main()
