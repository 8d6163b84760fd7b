"""Each search strategy, two real steps on the tiny baseline repo: who breeds, who survives, and the
same well-formed git records whatever the strategy."""
from __future__ import annotations

from dataclasses import replace

import pytest

from darwin_git import config, fitness, git, novelty, population
from darwin_git.errors import DarwinError
from darwin_git.generation import Generation
from darwin_git.operators.offline import unified_diff
from darwin_git.selection import Genome
from darwin_git.strategies import strategy_for

from .conftest import cli, clone_repo, commit_edit, quiet
from .conftest import git as plain
from .test_generation import ScriptedLlm
from .test_requests import commit_on


def two_steps(baseline_repo, tmp_path, strategy: str) -> tuple:
    repo = clone_repo(baseline_repo, tmp_path / strategy)
    cfg = config.load(repo)
    cfg = replace(cfg, evolution=replace(cfg.evolution, strategy=strategy, reevaluations=0))  # one run each: cheaper
    (repo / "darwin.toml").write_text(cfg.to_toml())
    root = population.generations(repo)[0].summary.best
    summaries = [Generation(repo, config.load(repo), quiet()).run() for _ in range(2)]
    return repo, cfg, root, summaries


def check_records(repo, cfg, summaries) -> dict[int, population.Step]:
    """The records every strategy leaves: a plan and a summary per step, each child a branch (living or
    archived) whose commit names its planned parents, every evaluated genome a fitness note."""
    steps = population.generations(repo)
    assert sorted(steps) == [0, 1, 2] and all(s.plan and s.summary for g, s in steps.items() if g)
    assert [steps[g].summary for g in (1, 2)] == summaries
    made = {**population.living(repo), **population.archived(repo)}
    docs = fitness.all_fitness(repo, cfg.notes.fitness)
    for g in (1, 2):
        for slot in steps[g].plan.slots:
            if slot.child in made:
                info = git.commit_info(repo, [made[slot.child]])[made[slot.child]]
                assert info.trailers["Darwin-Parent"].split() == [p.sha for p in slot.parents]
                assert docs[made[slot.child]].n >= 1
        assert set(steps[g].summary.evaluated) <= set(made)
    assert set(population.living(repo)) == {s.name for s in summaries[-1].survivors}
    return steps


@pytest.mark.parametrize("strategy", config.STRATEGIES)
def test_each_strategy_runs_two_steps_and_leaves_well_formed_records(baseline_repo, tmp_path, strategy):
    repo, cfg, root, summaries = two_steps(baseline_repo, tmp_path, strategy)
    steps = check_records(repo, cfg, summaries)
    for g in (1, 2):
        plan, summary = steps[g].plan, steps[g].summary
        best_before = min(plan.population.values(), key=lambda sha: (fitness.of(repo, cfg.notes.fitness, sha).fitness
                                                                     or float("inf")))
        if strategy == "greedy":  # one child of the current best; one survivor
            assert len(plan.slots) == 1 and [p.sha for p in plan.slots[0].parents] == [best_before]
            assert len(summary.survivors) == 1
        elif strategy == "climb":  # the best has had fewer than `patience` children: one child of it
            assert [[p.sha for p in s.parents] for s in plan.slots] == [[best_before]]
        elif strategy == "random":  # every child is a change of the baseline itself
            assert len(plan.slots) == cfg.evolution.offspring
            assert all([p.sha for p in s.parents] == [root.sha] for s in plan.slots)
        else:
            assert len(plan.slots) == cfg.evolution.offspring
            assert {p.sha for s in plan.slots for p in s.parents} <= set(plan.population.values())


def genome(name: str, fit: float, spread: float, n: int = 2) -> Genome:
    return Genome(name, name * 8, fit, spread, n, "ok")


def test_climb_exploits_the_best_until_it_stalls_then_widens():
    import random

    evo = config.Evolution(strategy="climb", population=3, offspring=4, patience=2)
    climb, root = strategy_for("climb"), genome("r", 2.5, 0.0)
    best, second, third = genome("a", 2.0, 0.01), genome("b", 2.1, 0.01), genome("c", 2.2, 0.01)
    pool = [third, best, second]
    assert climb.parents(pool, root, {best.sha: 1}, evo, random.Random(0)) == [[best]]  # 1 < patience: deep
    wide = climb.parents(pool, root, {best.sha: 2}, evo, random.Random(0))
    assert len(wide) == 4 and wide[0][0] == best and wide[0][1] in (second, third)  # crossover with another lineage
    assert all(s == [second] or s == [third] for s in wide[1:])  # the stepping stones, not the stalled best
    alone = climb.parents([best], root, {best.sha: 2}, evo, random.Random(0))
    assert alone == [[best], [root], [root], [root]]  # a lone stalled best: restarts from the baseline


def test_greedy_promotes_a_child_only_beyond_the_measured_noise():
    evo = config.Evolution(strategy="greedy", population=1, offspring=1, reevaluations=1)
    greedy, parent = strategy_for("greedy"), genome("p", 2.00, 0.01)
    incumbents = {parent.sha}
    assert greedy.survivors([parent, genome("c", 1.99, 0.01)], incumbents, evo) == [parent]  # within noise
    assert greedy.survivors([parent, genome("c", 1.90, 0.01)], incumbents, evo)[0].name == "c"
    assert greedy.survivors([parent, genome("c", 2.10, 0.01)], incumbents, evo) == [parent]
    unmeasured = replace(evo, reevaluations=0)  # no spread to beat: the mean decides
    assert greedy.survivors([genome("p", 2.0, 0, 1), genome("c", 1.99, 0, 1)], {"p" * 8}, unmeasured)[0].name == "c"


def test_init_sets_the_strategy_and_status_names_it(tmp_path, corpus_file):
    repo = tmp_path / "default"
    assert cli("init", str(repo), "--data", str(corpus_file)).exit_code == 0
    evo = config.load(repo).evolution  # the search the benchmark measured best: greedy, gate and paired test on
    assert (evo.strategy, evo.population, evo.offspring, evo.novelty, evo.paired) == ("greedy", 1, 1, True, True)
    assert "greedy search" in cli("status", "-C", str(repo)).output
    assert cli("init", str(tmp_path / "mu"), "--strategy", "evolution", "--data", str(corpus_file)).exit_code == 0
    evo = config.load(tmp_path / "mu").evolution
    assert (evo.strategy, evo.population, evo.offspring) == ("evolution", 4, 4)
    assert cli("init", str(tmp_path / "x"), "--strategy", "anneal").exit_code == 2  # click names the choices


def test_a_strategy_that_is_not_one_is_a_one_line_error():
    cfg = config.Config()
    with pytest.raises(DarwinError, match=r"\[evolution\] strategy must be one of evolution, greedy, random"):
        config.check(replace(cfg, evolution=replace(cfg.evolution, strategy="anneal")))


def test_the_novelty_gate_refuses_a_revert_and_a_repeat_of_a_pruned_change(genome_repo):
    repo = genome_repo
    root = plain(repo, "rev-parse", "HEAD").strip()
    kept = commit_edit(repo, "train.py", "learning_rate = 2e-3", "learning_rate = 3e-3", "raise the LR")
    plain(repo, "checkout", "-q", root)
    pruned = commit_edit(repo, "train.py", "beta2 = 0.95", "beta2 = 0.99", "raise beta2")
    plain(repo, "checkout", "-q", kept)
    again = commit_edit(repo, "train.py", "beta2 = 0.95", "beta2 = 0.99", "raise beta2 again")  # other context
    plain(repo, "reset", "-q", "--hard", kept)
    new = commit_edit(repo, "train.py", "warmup_steps = 50", "warmup_steps = 25", "shorter warmup")
    gate = novelty.Gate(repo, [novelty.Known(kept, root, "ada-g1-0", "raise the LR", ""),
                               novelty.Known(pruned, root, "bo-g1-1", "raise beta2", "was pruned")])
    assert "reverts ada-g1-0's kept change 'raise the LR'" in gate.verdict(kept, git.tree_of(repo, root))
    assert "bo-g1-1 made this change and was pruned" in gate.verdict(kept, git.tree_of(repo, again))
    assert gate.verdict(kept, git.tree_of(repo, new)) is None
    assert gate.verdict(root, git.tree_of(repo, pruned)) is not None  # the pruned change on its own parent too


def test_a_generation_with_the_gate_asks_again_and_records_the_skip(baseline_repo, tmp_path):
    repo = clone_repo(baseline_repo, tmp_path / "gated")
    cfg = config.load(repo)
    cfg = replace(cfg, evolution=replace(cfg.evolution, strategy="greedy", novelty=True, reevaluations=0))
    (repo / "darwin.toml").write_text(cfg.to_toml())
    root = population.generations(repo)[0].summary.best.sha
    train = git.read_file(repo, root, "train.py")
    lost = train.replace("beta2 = 0.95", "beta2 = 0.99")
    pruned = commit_on(repo, root, {"train.py": ("100644", lost)}, "Raise beta2\n\nDarwin-Agent: bo\n"
                       "Darwin-Parent: " + root + "\nDarwin-Operator: offline\nDarwin-Generation: 0\n")
    plain(repo, "update-ref", "refs/darwin/archive/bo-g0-9", pruned)
    llm = ScriptedLlm([unified_diff({"train.py": train}, {"train.py": lost}),
                       unified_diff({"train.py": train}, {"train.py": train.replace("warmup_steps = 50",
                                                                                    "warmup_steps = 25")})])
    summary = Generation(repo, config.load(repo), quiet(), operator=llm).run()
    assert llm.calls == 2
    child = population.generations(repo)[1].plan.slots[0].child
    sha = population.living(repo).get(child) or population.archived(repo)[child]
    assert "warmup_steps = 25" in git.read_file(repo, sha, "train.py")
    note = git.notes_json(repo, cfg.notes.mutation)[sha]
    assert len(note["novelty_skipped"]) == 1 and "bo-g0-9 made this change and was pruned" in note["novelty_skipped"][0]
    assert summary.generation == 1


def test_a_paired_comparison_sees_a_lead_the_two_spreads_hide():
    """A benchmark's case: rotary embeddings beat their parent by 0.110 and 0.079 bpb on seeds 1337 and
    1338; each genome's own spread (0.022, 0.043) puts that within noise, their differences (spread
    0.022) do not. With [evolution] paired, greedy takes the child; without, it keeps the parent."""
    from darwin_git.selection import within_noise

    parent = Genome("p", "1", 3.964781, 0.043449, 2, "ok", ((1337, 3.995504), (1338, 3.934058)))
    child = Genome("c", "2", 3.870428, 0.021796, 2, "ok", ((1337, 3.88584), (1338, 3.855016)))
    assert within_noise(child, parent) and not within_noise(child, parent, paired=True)
    mixed = Genome("m", "3", 3.95519, 0.012112, 2, "ok", ((1337, 3.946625), (1338, 3.963754)))
    assert within_noise(mixed, parent, paired=True)  # better on one seed, worse on the other
    once = Genome("o", "4", 3.9, 0.0, 1, "ok", ((1337, 3.9),))  # one shared seed: the unpaired test stands
    assert within_noise(once, parent, paired=True) == within_noise(once, parent)
    greedy, evo = strategy_for("greedy"), config.Evolution(strategy="greedy", population=1, offspring=1, paired=False)
    assert greedy.survivors([parent, child], {parent.sha}, evo) == [parent]
    assert greedy.survivors([parent, child], {parent.sha}, replace(evo, paired=True)) == [child]
