"""Search strategies: which genomes breed in a step, and which survive it.

Every strategy writes the same git records (plan, children, notes, archive, summary), because
generation.py does the writing; a strategy only decides, over `Genome` values:
  evolution  (mu + lambda): tournament parents, some crossover, the best `population` survive
  greedy     (1 + 1): one child of the current best per step; it replaces its parent only when it
             wins beyond the measured noise (autoresearch's keep-or-revert loop)
  random     best-of-N: every child is a single change of the baseline; the best `population` survive
  climb      one child of the best per step while that pays; after `patience` children without a
             gain, a wide step: crossover with another lineage and changes of the other survivors
The simple two are the baselines the default must beat at equal evaluations
(benchmarks/search_compare.py measures it).
"""
from __future__ import annotations

import random
from typing import Protocol

from ..config import Evolution
from ..selection import Genome


class Strategy(Protocol):
    name: str

    def parents(self, pool: list[Genome], root: Genome, children: dict[str, int], evo: Evolution,
                rng: random.Random) -> list[list[Genome]]:
        """One list of parents per offspring slot: one parent is a mutation, two a crossover.
        `pool` is the living population, `root` the baseline, `children` how many each sha has had."""
        ...

    def survivors(self, candidates: list[Genome], incumbents: set[str], evo: Evolution) -> list[Genome]:
        """Who keeps a branch: `candidates` are the step's population and children, all evaluated;
        `incumbents` the shas that were living before the step."""
        ...


def strategy_for(name: str) -> Strategy:
    """The strategy named in [evolution] strategy (config.py checks the name)."""
    from .best_of_n import BestOfN
    from .climb import Climb
    from .greedy import Greedy
    from .mu_plus_lambda import MuPlusLambda

    return {s.name: s for s in (MuPlusLambda(), Greedy(), BestOfN(), Climb())}[name]
