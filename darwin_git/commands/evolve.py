"""Commands that run the search: one generation, or K of them."""
from __future__ import annotations

from pathlib import Path

import click

from .. import views
from . import evolution_repo, executor_options, repo_option, with_executor


@click.command()
@executor_options
@repo_option
def generation(kind, slots, address, repo_dir) -> None:
    """Run one generation (or finish an interrupted one): breed, evaluate, select, prune."""
    from ..generation import Generation

    repo, cfg = evolution_repo(repo_dir)
    views.summary(Generation(repo, with_executor(cfg, kind, slots, address), views.console).run())


@click.command()
@click.option("-g", "--generations", type=click.IntRange(1, 100000), default=1, show_default=True)
@executor_options
@repo_option
def evolve(generations, kind, slots, address, repo_dir) -> None:
    """Run K generations after the baseline (evaluated first if missing)."""
    from ..generation import Generation, last_finished

    repo, cfg = evolution_repo(repo_dir)
    cfg = with_executor(cfg, kind, slots, address)
    target = max(last_finished(repo), 0) + generations
    while last_finished(repo) < target:
        if cfg.evolution.pause_on_requests and paused(repo):
            return
        views.summary(Generation(repo, cfg, views.console).run())


def paused(repo: Path) -> bool:
    """With [evolution] pause_on_requests, say so and stop while any request waits for review."""
    from ..review import open_requests

    waiting = [d.id for d in open_requests(repo)]
    if waiting:
        views.console.print(f"paused: {len(waiting)} open request(s) wait for review ({', '.join(waiting)}). "
                            "List them with `darwin-git requests`, read one with `darwin-git review ID`, decide with "
                            "`darwin-git approve ID` or `darwin-git reject ID --reason ...`, then run `darwin-git evolve` "
                            "again ([evolution] pause_on_requests = true in darwin.toml).")
    return bool(waiting)
