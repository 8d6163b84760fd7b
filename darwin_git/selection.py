"""Selection: who breeds (tournament, damped by how many children a genome has) and who survives.

Pure functions over `Genome` values; generation.py reads them from git and writes the verdict back.
"""
from __future__ import annotations

import math
import random
import statistics
from dataclasses import dataclass


@dataclass(frozen=True)
class Genome:
    name: str  # branch short name
    sha: str
    fitness: float | None  # mean val bpb over runs; None if unevaluated or failed
    spread: float = 0.0  # sample std over runs
    n: int = 0  # runs
    status: str = ""
    by_seed: tuple[tuple[int, float], ...] = ()  # (seed, val bpb) of each good run: what a paired comparison reads

    @property
    def ok(self) -> bool:
        return self.status == "ok" and self.fitness is not None

    def key(self) -> tuple:
        return (self.fitness if self.ok else math.inf, self.name)


def tournament(pool: list[Genome], children: dict[str, int], size: int, rng: random.Random,
               exclude: str | None = None) -> Genome:
    """Best of `size` entrants drawn with weight 1/(1 + children): busy parents get fewer turns."""
    pool = [g for g in pool if g.ok and g.sha != exclude] or [g for g in pool if g.sha != exclude]
    weights = [1.0 / (1 + children.get(g.sha, 0)) for g in pool]
    entrants = rng.choices(pool, weights=weights, k=max(1, size))
    return min(entrants, key=Genome.key)


def survivors(candidates: list[Genome], mu: int) -> list[Genome]:
    """(mu + lambda): the best `mu` genomes that succeeded; failures never survive."""
    return sorted((g for g in candidates if g.ok), key=Genome.key)[:mu]


def noise_bar(*spreads: float) -> float:
    """Twice the combined seed spread: a lead smaller than this is not established."""
    return 2 * math.sqrt(sum(x * x for x in spreads))


def within_noise(a: Genome, b: Genome, paired: bool = False) -> bool:
    """Is a's lead over b smaller than twice their combined seed spread (or unmeasured)?

    `paired`: where the two share two seeds or more, the test is on their differences seed by seed
    (every genome's run k has seed base + k and every run is scored on the same windows): the lead
    stands when every difference has its sign and their mean is beyond twice their spread. A seed
    moves related genomes together, so the paired spread is the noise left once that is taken out."""
    if not (a.ok and b.ok):
        return False
    if paired:
        theirs = dict(b.by_seed)
        d = [v - theirs[s] for s, v in a.by_seed if s in theirs]
        if len(d) >= 2:
            mean = statistics.fmean(d)
            return not (all((x < 0) == (mean < 0) and x != 0 for x in d)
                        and abs(mean) > noise_bar(statistics.stdev(d)))
    if a.n < 2 and b.n < 2:
        return True  # one run each: the spread is unknown, so the lead is not established
    return abs(a.fitness - b.fitness) <= noise_bar(a.spread, b.spread)
