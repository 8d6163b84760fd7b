"""The `darwin-git` command line: thin click wrappers; the work lives in the modules they call."""
from __future__ import annotations

import functools
import json
import sys
from dataclasses import replace
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from . import config as config_mod
from . import git
from .errors import DarwinError
from .evaluator import EvalSettings, evaluate, parse_budget

console = Console(highlight=False)


def one_line_errors(fn):
    """Turn DarwinError into `error: ...` and exit 1: users see a sentence, never a traceback."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except DarwinError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted: everything recorded so far is kept in git; run the command again to resume",
                       err=True)
            sys.exit(130)
    return wrapper


@click.group()
@click.version_option(package_name="darwin-git")
def main() -> None:
    """Evolve LLM training code in a git repository: genomes are branches, fitness is a git note."""


def print_record(record: dict) -> None:
    table = Table(show_header=False, box=None)
    for key in ("commit", "status", "stage", "test_bpb", "val_bpb", "mfu", "tokens_per_s", "params",
                "wall_s", "peak_mem", "seed", "budget", "device", "sandbox", "eval_s", "error"):
        value = record.get(key)
        if value not in (None, ""):
            table.add_row(f"[bold]{key}[/]", f"{value:.4g}" if isinstance(value, float) else str(value))
    console.print(table)


@main.command("eval")
@click.argument("rev", default="HEAD")
@click.option("--budget", help="Training budget: 60s, 300steps or 100000tokens.")
@click.option("--seed", type=int, help="Seed passed to the genome.")
@click.option("--device", help="cpu, cuda or cuda:N.")
@click.option("--data", help="UTF-8 text file to train on (default: the Shakespeare corpus).")
@click.option("--tokenizer", type=click.Choice(["char", "gpt2"]), help="Tokenizer for the corpus.")
@click.option("--memory-mb", type=int, help="Resident memory limit for the genome's processes.")
@click.option("--sandbox", type=click.Choice(["auto", "bwrap", "none"]), help="Isolation for genome code.")
@click.option("--note", is_flag=True, help="Write the record as a JSON note under refs/notes/darwin/fitness.")
@click.option("--json", "as_json", is_flag=True, help="Print the record as JSON.")
@click.option("-C", "repo_dir", default=".", type=click.Path(file_okay=False), help="Repository to use.")
@one_line_errors
def eval_cmd(rev, budget, seed, device, data, tokenizer, memory_mb, sandbox, note, as_json, repo_dir) -> None:
    """Train and score one genome commit (default HEAD) and print its fitness record."""
    repo = git.toplevel(repo_dir)
    cfg = config_mod.load(repo)
    settings: EvalSettings = cfg.evaluation if cfg else EvalSettings()
    overrides = {k: v for k, v in dict(budget=budget, seed=seed, device=device, data=data, tokenizer=tokenizer,
                                        memory_mb=memory_mb, sandbox=sandbox).items() if v is not None}
    settings = replace(settings, **overrides)
    if settings.data != "shakespeare" and data is not None:
        settings = replace(settings, data=str(Path(data).resolve()))
    parse_budget(settings.budget)
    with console.status(f"evaluating {rev} ({settings.budget} on {settings.device})"):
        record = evaluate(repo, rev, settings).to_dict()
    if note:
        from .fitness import add_run
        add_run(repo, record, (cfg.notes.fitness if cfg else config_mod.Notes().fitness))
    if as_json:
        click.echo(json.dumps(record, indent=1, sort_keys=True))
    else:
        print_record(record)
