"""(1 + 1) hill-climbing: one child of the current best per step, kept only when it beats its
parent by more than their measured seed spread (or, with [evolution] paired, by more than the spread
of their seed-by-seed differences), so a lucky seed never replaces a measured parent."""
from __future__ import annotations

import random

from .. import selection
from ..config import Evolution
from ..selection import Genome


class Greedy:
    name = "greedy"

    def parents(self, pool: list[Genome], root: Genome, children: dict[str, int], evo: Evolution,
                rng: random.Random) -> list[list[Genome]]:
        ranked = selection.survivors(pool, 1) or pool
        return [[ranked[0]]]

    def survivors(self, candidates: list[Genome], incumbents: set[str], evo: Evolution) -> list[Genome]:
        held = selection.survivors([g for g in candidates if g.sha in incumbents], 1)
        challengers = selection.survivors([g for g in candidates if g.sha not in incumbents], 1)
        if not held:
            return challengers
        if not challengers or challengers[0].fitness >= held[0].fitness:
            return held
        # with no re-evaluations there is no spread to beat: the mean decides, as in autoresearch
        noisy = evo.reevaluations > 0 and selection.within_noise(challengers[0], held[0], evo.paired)
        return held if noisy else challengers
