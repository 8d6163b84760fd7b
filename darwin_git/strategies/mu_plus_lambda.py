"""(mu + lambda) evolution: tournament parents damped by their child count, crossover at a rate,
the best `population` of parents and children survive."""
from __future__ import annotations

import random

from .. import selection
from ..config import Evolution
from ..selection import Genome


class MuPlusLambda:
    name = "evolution"

    def parents(self, pool: list[Genome], root: Genome, children: dict[str, int], evo: Evolution,
                rng: random.Random) -> list[list[Genome]]:
        counts, slots = dict(children), []
        for _ in range(evo.offspring):
            first = selection.tournament(pool, counts, evo.tournament, rng)
            counts[first.sha] = counts.get(first.sha, 0) + 1
            parents = [first]
            distinct = {p.sha for p in pool if p.ok} - {first.sha}
            if distinct and rng.random() < evo.crossover_rate:
                second = selection.tournament(pool, counts, evo.tournament, rng, exclude=first.sha)
                counts[second.sha] = counts.get(second.sha, 0) + 1
                parents.append(second)
            slots.append(parents)
        return slots

    def survivors(self, candidates: list[Genome], incumbents: set[str], evo: Evolution) -> list[Genome]:
        return selection.survivors(candidates, evo.population)
