"""The `darwin-git` entry point: the command group and the one place an error becomes a line.

Commands live in darwin_git/commands/ (one module per group), what they print in views.py.
"""
from __future__ import annotations

import sys

import click

from .commands import evolve, genome, inspect, requests
from .errors import DarwinError


class _Darwin(click.Group):
    def invoke(self, ctx: click.Context):
        """Users see a sentence, never a traceback; an interrupted run says that nothing is lost."""
        try:
            return super().invoke(ctx)
        except DarwinError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted: everything recorded so far is kept in git; run the command again to resume",
                       err=True)
            sys.exit(130)


@click.group(cls=_Darwin)
@click.version_option(package_name="darwin-git")
def main() -> None:
    """Evolve LLM training code in a git repository: genomes are branches, fitness is a git note."""


for command in (genome.init, genome.eval_cmd, evolve.generation, evolve.evolve, inspect.status, inspect.show,
                inspect.lineage, genome.doctor, inspect.memory_cmd, requests.requests_cmd, requests.review,
                requests.approve, requests.reject, requests.comment, requests.propose):
    main.add_command(command)
