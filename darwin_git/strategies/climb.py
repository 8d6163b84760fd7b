"""Exploit while it pays, widen when it stalls: while the current best keeps being displaced, each
step is one child of it (the deep, greedy move); once the best has had `patience` children without
being displaced, the step widens to `offspring` children: a crossover of the best with another
living lineage and changes of the other survivors (the stepping stones selection kept), or of the
baseline when the best is alone. The stall is read from git itself (how many children the best
has), so a resumed or copied repo climbs on exactly where it was."""
from __future__ import annotations

import random

from .. import selection
from ..config import Evolution
from ..selection import Genome


class Climb:
    name = "climb"

    def parents(self, pool: list[Genome], root: Genome, children: dict[str, int], evo: Evolution,
                rng: random.Random) -> list[list[Genome]]:
        ranked = selection.survivors(pool, len(pool)) or pool
        best, others = ranked[0], ranked[1:]
        if children.get(best.sha, 0) < evo.patience:
            return [[best]]
        if not others:  # a lone best that stalled: one more child of it, the rest restart from the baseline
            restart = root if root.sha != best.sha else best
            return [[best], *([restart] for _ in range(evo.offspring - 1))]
        counts, slots = dict(children), [[best, selection.tournament(others, children, evo.tournament, rng)]]
        while len(slots) < evo.offspring:
            parent = selection.tournament(others, counts, evo.tournament, rng)
            counts[parent.sha] = counts.get(parent.sha, 0) + 1
            slots.append([parent])
        return slots

    def survivors(self, candidates: list[Genome], incumbents: set[str], evo: Evolution) -> list[Genome]:
        return selection.survivors(candidates, evo.population)
