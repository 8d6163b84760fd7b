"""Commands that read the population back: the leaderboard, one genome, a lineage, an agent's memory."""
from __future__ import annotations

import json

import click

from .. import views
from ..errors import DarwinError
from . import evolution_repo, repo_option


@click.command()
@click.option("--all", "show_all", is_flag=True, help="Include archived (pruned) genomes.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (every genome).")
@click.option("--limit", type=click.IntRange(0), default=50, show_default=True,
              help="Rows in the table, best first (0: all).")
@repo_option
def status(show_all, as_json, limit, repo_dir) -> None:
    """Leaderboard of the population, best first."""
    from ..report import leaderboard

    repo, cfg = evolution_repo(repo_dir)
    board = leaderboard(repo, cfg, include_archive=show_all)
    if as_json:
        click.echo(json.dumps(board, indent=1))
        return
    views.leaderboard(board, limit)


@click.command()
@click.argument("genome")
@repo_option
def show(genome, repo_dir) -> None:
    """A genome's change vs its parent, its reasoning and its fitness runs."""
    from ..report import describe

    repo, cfg = evolution_repo(repo_dir)
    d = describe(repo, cfg, genome)
    views.genome(d)


@click.command()
@click.argument("genome")
@repo_option
def lineage(genome, repo_dir) -> None:
    """Ancestry of a genome back to the template, with fitness deltas."""
    from ..report import ancestry

    repo, cfg = evolution_repo(repo_dir)
    views.lineage(genome, ancestry(repo, cfg, genome))


@click.command("memory")
@click.argument("name")
@click.option("--prompt", is_flag=True, help="NAME is a genome: print the whole prompt an LLM gets to change it "
                                             "(system text, experiment log, code, memory, lessons) and its size.")
@repo_option
def memory_cmd(name, prompt, repo_dir) -> None:
    """Print what the LLM is shown when agent NAME writes a mutation (after the system text and the code)."""
    from .. import memory, population

    repo, cfg = evolution_repo(repo_dir)
    if prompt:
        return _prompt(repo, cfg, name)
    agent = population.agent_of(name.removeprefix("darwin/"))
    agents = sorted({population.agent_of(n) for n in {**population.living(repo), **population.archived(repo)}})
    if agent not in agents:
        raise DarwinError(f"no agent named {agent!r} here; the agents are {', '.join(agents) or 'none'}")
    shown = memory.context(repo, cfg, agent, memory.history(repo, cfg))
    click.echo("\n\n".join(item.strip() for item in (shown.memory, *shown.inspiration) if item.strip()))


def _prompt(repo, cfg, name: str) -> None:
    """The next generation's prompt for a change of genome `name`, written by its own agent, as sent."""
    from .. import memory, population
    from ..generation import Generation, genome_files
    from ..operators import llm_tokens
    from ..operators.llm import LlmOperator
    from ..report import resolve_genome

    shown_name, sha = resolve_genome(repo, name)
    gens = population.generations(repo)
    g = max(gens, default=-1) + (1 if not gens or gens[max(gens)].summary else 0)
    context = Generation(repo, cfg).context(g, 0, shown_name, sha, population.agent_of(shown_name),
                                            memory.history(repo, cfg))
    operator = LlmOperator(cfg.llm, budget=cfg.evaluation.budget, device=cfg.evaluation.device)
    messages = operator.messages(genome_files(repo, sha), context)
    text = "\n\n".join(f"## {m['role']}\n\n{m['content']}" for m in messages)
    click.echo(text)
    click.echo(f"\n(the prompt is about {llm_tokens.count(text):,} tokens, {llm_tokens.method()}; the experiment "
               f"log {llm_tokens.count(context.brief):,})")
