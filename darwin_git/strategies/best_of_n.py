"""Best-of-N: every child is one change of the baseline, independent of every other child; the
best `population` survive. What a search gains over this, it gains from building on its finds."""
from __future__ import annotations

import random

from .. import selection
from ..config import Evolution
from ..selection import Genome


class BestOfN:
    name = "random"

    def parents(self, pool: list[Genome], root: Genome, children: dict[str, int], evo: Evolution,
                rng: random.Random) -> list[list[Genome]]:
        return [[root] for _ in range(evo.offspring)]

    def survivors(self, candidates: list[Genome], incumbents: set[str], evo: Evolution) -> list[Genome]:
        return selection.survivors(candidates, evo.population)
