"""The `darwin-git` commands, one module per command group; what they print is views.py's.

Each command parses its options, calls the module that does the work and hands the result to a
view. Errors are not caught here: cli.main is the one boundary that turns them into a line.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import click

from .. import config, git
from ..errors import DarwinError

repo_option = click.option("-C", "repo_dir", default=".", type=click.Path(file_okay=False),
                           help="Evolution repo to use (default: the current directory).")


def identity_option(fn):
    return click.option("--by", help="Your name, as the record shows it (default: git's committer name).")(fn)


def executor_options(fn):
    """--executor/--slots/--address: where this run's evaluations go, overriding [executor] in darwin.toml."""
    fn = click.option("--address", help="Ray cluster to join: auto or ray://host:10001 (implies --executor ray).")(fn)
    fn = click.option("--slots", type=click.IntRange(1), help="Evaluations at once (default: 1 on CPU, "
                      "one per GPU x [executor] per_device, Ray: what the cluster fits).")(fn)
    return click.option("--executor", "kind", type=click.Choice(["local", "ray"]),
                        help="Evaluate on this machine's slots or on a Ray cluster.")(fn)


def evolution_repo(repo_dir: str) -> tuple[Path, config.Config]:
    repo = git.toplevel(repo_dir)
    cfg = config.load(repo)
    if cfg is None:
        raise DarwinError(f"{repo} has no {config.CONFIG}: not an evolution repo; create one with "
                          "`darwin-git init DIR`")
    return repo, cfg


def with_executor(cfg: config.Config, kind: str | None, slots: int | None, address: str | None) -> config.Config:
    """The config this run uses: darwin.toml's, with the command line's executor choices on top."""
    overrides = {k: v for k, v in dict(kind=kind or ("ray" if address else None), slots=slots,
                                        address=address).items() if v is not None}
    return replace(cfg, executor=replace(cfg.executor, **overrides))
