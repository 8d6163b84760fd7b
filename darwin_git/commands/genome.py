"""Commands about one genome and this machine: create an evolution repo, evaluate a commit, check the setup."""
from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import click
from rich.markup import escape

from .. import config, git, views
from ..config import EvalSettings, parse_budget
from ..errors import DarwinError
from ..evaluator import compute_mode, evaluate
from ..fitness import add_run
from ..fitness import of as fitness_of
from ..sandbox import describe as describe_sandbox
from . import evolution_repo, repo_option


@click.command("eval")
@click.argument("rev", default="HEAD")
@click.option("--budget", help="Training budget: 60s (the harness's clock) or 100000tokens (served by the harness).")
@click.option("--seed", type=int, help="Seed passed to the genome.")
@click.option("--device", help="cpu, cuda or cuda:N.")
@click.option("--data", help="UTF-8 text file to train on (default: the Shakespeare corpus).")
@click.option("--tokenizer", type=click.Choice(["char", "gpt2"]), help="Tokenizer for the corpus.")
@click.option("--memory-mb", type=int, help="Resident memory limit for the genome's processes.")
@click.option("--sandbox", type=click.Choice(["auto", "bwrap", "none"]), help="Isolation for genome code.")
@click.option("--note", is_flag=True, help="Write the record as a JSON note under refs/notes/darwin/fitness.")
@click.option("--json", "as_json", is_flag=True, help="Print the record as JSON.")
@click.option("-C", "repo_dir", default=".", type=click.Path(file_okay=False), help="Repository to use.")
def eval_cmd(rev, budget, seed, device, data, tokenizer, memory_mb, sandbox, note, as_json, repo_dir) -> None:
    """Train and score one genome commit (default HEAD) and print its fitness record."""
    repo = git.toplevel(repo_dir)
    cfg = config.load(repo)
    settings: EvalSettings = cfg.evaluation if cfg else EvalSettings()
    overrides = {k: v for k, v in dict(budget=budget, seed=seed, device=device, data=data, tokenizer=tokenizer,
                                        memory_mb=memory_mb, sandbox=sandbox).items() if v is not None}
    if data:
        overrides["data"] = str(Path(data).expanduser().resolve())
    settings = replace(settings, **overrides)
    config.check_section("evaluation", settings, "darwin-git eval")
    ref = cfg.notes.fitness if cfg else config.Notes().fitness
    if note:  # the run is added to the commit's note: one that cannot take it stops us before training
        fitness_of(repo, ref, git.resolve(repo, rev))
    with views.console.status(f"evaluating {rev} ({settings.budget} on {settings.device})"):
        record = evaluate(repo, rev, settings).to_dict()
    if note:
        add_run(repo, record, ref)
    if as_json:
        click.echo(json.dumps(record, indent=1, sort_keys=True))
    else:
        views.record(record)


@click.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--strategy", type=click.Choice(config.STRATEGIES), default=config.Evolution.strategy, show_default=True,
              help="Search: evolution (mu + lambda), greedy (1 + 1 hill-climbing), random (best-of-N children of the baseline), climb (children of the best until it stalls, then wider).")
@click.option("--population", type=click.IntRange(max=1000),
              help="Genomes kept each generation (default: 4; greedy: 1).")
@click.option("--offspring", type=click.IntRange(max=1000), help="Children per generation (default: population).")
@click.option("--data", help="UTF-8 text file to train on (default: the Shakespeare corpus).")
@click.option("--tokenizer", type=click.Choice(["char", "gpt2"]), default="char", show_default=True)
@click.option("--budget", default="60s", show_default=True,
              help="Training budget: 60s (the harness's clock) or 100000tokens (served by the harness).")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--seed", type=int, default=1337, show_default=True)
def init(directory, strategy, population, offspring, data, tokenizer, budget, device, seed) -> None:
    """Create an evolution repo in DIRECTORY: the genome template, darwin.toml, hooks, agent branches."""
    from ..population import init_repo

    parse_budget(budget)
    if data:
        if not Path(data).is_file():
            raise DarwinError(f"corpus file {data!r} not found; pass --data with a UTF-8 text file")
        data = str(Path(data).resolve())
    population = (1 if strategy == "greedy" else 4) if population is None else population
    cfg = config.Config()
    cfg = replace(cfg, evolution=replace(cfg.evolution, strategy=strategy, population=population, seed=seed,
                                         offspring=population if offspring is None else offspring),
                  evaluation=replace(cfg.evaluation, budget=budget, device=device, seed=seed,
                                     data=data or "shakespeare", tokenizer=tokenizer))
    names = init_repo(directory, config.check(cfg, "darwin-git init"))
    views.console.print(f"created evolution repo [bold]{directory}[/] ({strategy} search) with {len(names)} agents: "
                  + ", ".join(f"darwin/{n}" for n in names))
    views.console.print(f"sandbox: {describe_sandbox()}")
    views.console.print(f"next: cd {directory} && darwin-git evolve -g 3")


@click.command()
@repo_option
def doctor(repo_dir) -> None:
    """What this machine enforces (sandbox, compute), then one tiny request to the configured LLM endpoint."""
    from ..config import resolved_operator
    from ..operators import OperatorError
    from ..operators.llm import LlmOperator

    _, cfg = evolution_repo(repo_dir)
    s = cfg.llm
    machine = (f"sandbox   {describe_sandbox()}\n"
               f"compute   {compute_mode(cfg.evaluation)} (each genome held to its slot's cores; [evaluation] compute)")
    if not s.model:
        views.console.print(escape(machine + "\nllm       none configured ([llm] model is empty): the offline catalogue mutates"))
        return
    where = (f"{s.model or '(no model)'} at {s.base_url or 'https://api.openai.com/v1'} "
             f"(key in ${s.api_key_env}: {'set' if os.environ.get(s.api_key_env or '') else 'not set'})")
    try:
        result = LlmOperator.from_config(cfg).ping()
    except (OperatorError, DarwinError) as e:
        raise DarwinError(f"{where}: {e}") from None
    priced = any(s.model.startswith(k) for k in s.prices)
    views.console.print(f"endpoint  {escape(where)}")
    views.console.print(f"operator  {resolved_operator(cfg)} ([evolution] operator = \"{cfg.evolution.operator}\")")
    views.console.print(f"reply     {escape(repr(result['reply']))} in {result['latency_s']:.2f}s")
    views.console.print(f"usage     {result['prompt_tokens']} prompt + {result['completion_tokens']} completion tokens, "
                  f"{result['requests']} request(s), ${result['cost_usd']:.6f}"
                  + ("" if priced else f" (no [llm.prices] entry for {s.model}: costs count as $0)"))
    views.console.print(escape(machine))
