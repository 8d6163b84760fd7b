"""Commands for requests, reviewed like pull requests: list, read, approve, reject, comment, propose."""
from __future__ import annotations

import json
from pathlib import Path

import click
from rich.markup import escape

from .. import views
from . import evolution_repo, identity_option, repo_option


@click.command("requests")
@click.option("--all", "show_all", is_flag=True, help="Include approved and rejected review.")
@click.option("--json", "as_json", is_flag=True, help="Every field of every listed request.")
@repo_option
def requests_cmd(show_all, as_json, repo_dir) -> None:
    """Requests waiting for review, one line each (with --all, decided ones too)."""
    from .. import review

    repo, _ = evolution_repo(repo_dir)
    docs = review.load(repo) if show_all else review.open_requests(repo)
    if as_json:
        click.echo(json.dumps([d.json() for d in docs], indent=1))
        return
    if not docs:
        views.console.print("no requests" if show_all else "no open requests (--all lists decided ones)")
    for doc in docs:
        views.request_line(doc)


@click.command()
@click.argument("rid", metavar="ID")
@click.option("--patch", "as_patch", is_flag=True, help="Print the change as `git format-patch` output.")
@repo_option
def review(rid, as_patch, repo_dir) -> None:
    """A request as a pull-request page: rationale, evidence, history, diff stat and diff."""
    from .. import review
    from ..report import ancestry

    repo, cfg = evolution_repo(repo_dir)
    doc = review.get(repo, rid)
    if as_patch:
        click.echo(review.format_patch(repo, doc), nl=False)
        return
    history = ancestry(repo, cfg, doc.base)[-8:]  # read before printing: a broken note is then the only line
    stat, diff = (review.diff(repo, doc, stat=True), review.diff(repo, doc)) if doc.commit else ("", "")
    views.request_page(doc, history, stat, diff)


@click.command()
@click.argument("rid", metavar="ID")
@click.option("--to", "to", multiple=True, help="Living genome, agent (all its genomes) or `all`; repeatable "
              "(default: the genome the request was written for).")
@click.option("--data", type=click.Path(dir_okay=False, path_type=Path), help="For a data request: the file supplied.")
@click.option("--reason", default="", help="Why: the requester's memory shows it.")
@identity_option
@repo_option
def approve(rid, to, data, reason, by, repo_dir) -> None:
    """Approve a request: merge its change into living genomes (all or none) and record who and why."""
    from .. import review

    repo, cfg = evolution_repo(repo_dir)
    doc = review.approve(repo, cfg, rid, by or review.reviewer(repo), reason, to, data)
    event = doc.events[-1]
    for branch, sha in event.merged.items():
        views.console.print(f"merged {rid} into darwin/{branch}: {sha[:10]} (scored in the next generation)")
    if event.data:
        d = event.data
        views.console.print(f"recorded {d['path']} ({d['bytes']:,} bytes, sha256 {d['sha256']}). This search keeps its "
                      f"corpus, so its fitness stays comparable; to train on the file, start a new evolution repo: "
                      f"`darwin-git init DIR --data {d['path']}`")
    views.decided(doc, "approved")


@click.command()
@click.argument("rid", metavar="ID")
@click.option("--reason", required=True, help="Why not: the requester's memory shows it.")
@identity_option
@repo_option
def reject(rid, reason, by, repo_dir) -> None:
    """Reject a request; nothing is merged."""
    from .. import review

    repo, _ = evolution_repo(repo_dir)
    doc = review.reject(repo, rid, by or review.reviewer(repo), reason)
    views.decided(doc, "rejected")


@click.command()
@click.argument("rid", metavar="ID")
@click.argument("text")
@identity_option
@repo_option
def comment(rid, text, by, repo_dir) -> None:
    """Comment on a request (open or decided); the requester's memory shows it."""
    from .. import review

    repo, _ = evolution_repo(repo_dir)
    review.comment(repo, rid, by or review.reviewer(repo), text)
    views.console.print(f"commented on {rid}")


@click.command()
@click.option("--from", "source", required=True, help="A patch file, or a branch (its changes since it left --to).")
@click.option("--title", required=True, help="One line, like a commit subject.")
@click.option("--to", "to", required=True, help="The living genome (or an agent with one) the change is for.")
@click.option("--rationale", default="", help="Why it should lower val bpb.")
@click.option("--kind", type=click.Choice(["script", "restructure", "data", "other"]), default="script",
              show_default=True)
@identity_option
@repo_option
def propose(source, title, to, rationale, kind, by, repo_dir) -> None:
    """File a person's change as a request, validated like a mutation; approve it to merge it."""
    from .. import review

    repo, cfg = evolution_repo(repo_dir)
    doc = review.propose(repo, cfg, source, title, to, rationale, kind, by or review.reviewer(repo))
    views.console.print(f"filed {doc.id}: {escape(doc.title)} for darwin/{doc.genome} "
                        f"(review it with `darwin-git review {doc.id}`)")
