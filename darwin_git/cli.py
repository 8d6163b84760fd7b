"""The `darwin-git` command line: thin click wrappers; the work lives in the modules they call."""
from __future__ import annotations

import functools
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import config as config_mod
from . import git
from . import sandbox as sandbox_mod
from .errors import DarwinError
from .config import EvalSettings, parse_budget
from .evaluator import compute_mode, evaluate
from .fitness import add_run
from .fitness import of as fitness_of
from .population import Summary

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
    for key in ("commit", "status", "stage", "val_bpb", "test_bpb", "tokens", "wall_s", "data_stopped_s", "overrun_s",
                "tokens_per_s", "params", "flops_per_token", "mfu", "peak_mem", "seed", "budget", "device", "sandbox",
                "eval_s", "error"):
        value = record.get(key)
        if value not in (None, ""):
            table.add_row(f"[bold]{key}[/]", f"{value:.4g}" if isinstance(value, float) else str(value))
    console.print(table)


@main.command("eval")
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
@one_line_errors
def eval_cmd(rev, budget, seed, device, data, tokenizer, memory_mb, sandbox, note, as_json, repo_dir) -> None:
    """Train and score one genome commit (default HEAD) and print its fitness record."""
    repo = git.toplevel(repo_dir)
    cfg = config_mod.load(repo)
    settings: EvalSettings = cfg.evaluation if cfg else EvalSettings()
    overrides = {k: v for k, v in dict(budget=budget, seed=seed, device=device, data=data, tokenizer=tokenizer,
                                        memory_mb=memory_mb, sandbox=sandbox).items() if v is not None}
    if data:
        overrides["data"] = str(Path(data).expanduser().resolve())
    settings = replace(settings, **overrides)
    config_mod.check_section("evaluation", settings, "darwin-git eval")
    ref = cfg.notes.fitness if cfg else config_mod.Notes().fitness
    if note:  # the run is added to the commit's note: one that cannot take it stops us before training
        fitness_of(repo, ref, git.resolve(repo, rev))
    with console.status(f"evaluating {rev} ({settings.budget} on {settings.device})"):
        record = evaluate(repo, rev, settings).to_dict()
    if note:
        add_run(repo, record, ref)
    if as_json:
        click.echo(json.dumps(record, indent=1, sort_keys=True))
    else:
        print_record(record)


def evolution_repo(repo_dir: str) -> tuple[Path, config_mod.Config]:
    repo = git.toplevel(repo_dir)
    cfg = config_mod.load(repo)
    if cfg is None:
        raise DarwinError(f"{repo} has no {config_mod.CONFIG}: not an evolution repo; create one with "
                          "`darwin-git init DIR`")
    return repo, cfg


repo_option = click.option("-C", "repo_dir", default=".", type=click.Path(file_okay=False),
                           help="Evolution repo to use (default: the current directory).")


@main.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--population", type=click.IntRange(max=1000), default=4, show_default=True,
              help="Genomes kept each generation.")
@click.option("--offspring", type=click.IntRange(max=1000), help="Children per generation (default: population).")
@click.option("--data", help="UTF-8 text file to train on (default: the Shakespeare corpus).")
@click.option("--tokenizer", type=click.Choice(["char", "gpt2"]), default="char", show_default=True)
@click.option("--budget", default="60s", show_default=True,
              help="Training budget: 60s (the harness's clock) or 100000tokens (served by the harness).")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--seed", type=int, default=1337, show_default=True)
@one_line_errors
def init(directory, population, offspring, data, tokenizer, budget, device, seed) -> None:
    """Create an evolution repo in DIRECTORY: the genome template, darwin.toml, hooks, agent branches."""
    from .population import init_repo

    parse_budget(budget)
    if data:
        if not Path(data).is_file():
            raise DarwinError(f"corpus file {data!r} not found; pass --data with a UTF-8 text file")
        data = str(Path(data).resolve())
    cfg = config_mod.Config()
    cfg.evolution = replace(cfg.evolution, population=population, seed=seed,
                            offspring=population if offspring is None else offspring)
    cfg.evaluation = replace(cfg.evaluation, budget=budget, device=device, seed=seed,
                             data=data or "shakespeare", tokenizer=tokenizer)
    names = init_repo(directory, config_mod.check(cfg, "darwin-git init"))
    console.print(f"created evolution repo [bold]{directory}[/] with {len(names)} agents: "
                  + ", ".join(f"darwin/{n}" for n in names))
    console.print(f"sandbox: {sandbox_mod.describe()}")
    console.print(f"next: cd {directory} && darwin-git evolve -g 3")


def executor_options(fn):
    """--executor/--slots/--address: where this run's evaluations go, overriding [executor] in darwin.toml."""
    fn = click.option("--address", help="Ray cluster to join: auto or ray://host:10001 (implies --executor ray).")(fn)
    fn = click.option("--slots", type=click.IntRange(1), help="Evaluations at once (default: 1 on CPU, "
                      "one per GPU x [executor] per_device, Ray: what the cluster fits).")(fn)
    return click.option("--executor", "kind", type=click.Choice(["local", "ray"]),
                        help="Evaluate on this machine's slots or on a Ray cluster.")(fn)


def with_executor(cfg: config_mod.Config, kind: str | None, slots: int | None, address: str | None) -> None:
    overrides = {k: v for k, v in dict(kind=kind or ("ray" if address else None), slots=slots,
                                        address=address).items() if v is not None}
    cfg.executor = replace(cfg.executor, **overrides)


@main.command()
@executor_options
@repo_option
@one_line_errors
def generation(kind, slots, address, repo_dir) -> None:
    """Run one generation (or finish an interrupted one): breed, evaluate, select, prune."""
    from .generation import Generation

    repo, cfg = evolution_repo(repo_dir)
    with_executor(cfg, kind, slots, address)
    print_summary(Generation(repo, cfg, console).run())


@main.command()
@click.option("-g", "--generations", type=click.IntRange(1, 100000), default=1, show_default=True)
@executor_options
@repo_option
@one_line_errors
def evolve(generations, kind, slots, address, repo_dir) -> None:
    """Run K generations after the baseline (evaluated first if missing)."""
    from .generation import Generation, last_finished

    repo, cfg = evolution_repo(repo_dir)
    with_executor(cfg, kind, slots, address)
    target = max(last_finished(repo), 0) + generations
    while last_finished(repo) < target:
        if cfg.evolution.pause_on_requests and paused(repo):
            return
        print_summary(Generation(repo, cfg, console).run())


def paused(repo: Path) -> bool:
    """With [evolution] pause_on_requests, say so and stop while any request waits for review."""
    from .review import open_requests

    waiting = [d["id"] for d in open_requests(repo)]
    if waiting:
        console.print(f"paused: {len(waiting)} open request(s) wait for review ({', '.join(waiting)}). "
                      "List them with `darwin-git requests`, read one with `darwin-git review ID`, decide with "
                      "`darwin-git approve ID` or `darwin-git reject ID --reason ...`, then run `darwin-git evolve` "
                      "again ([evolution] pause_on_requests = true in darwin.toml).")
    return bool(waiting)


def print_summary(summary: Summary) -> None:
    best = summary.best
    console.print(f"[bold]generation {summary.generation}[/] done in {summary.wall_s:.0f}s: "
                  f"best {best.name} {best.fitness:.4f} ({summary.delta_vs_baseline:+.4f} vs baseline), "
                  f"{len(summary.survivors)} survive, {len(summary.pruned)} archived, "
                  f"{len(summary.failures)} failed to breed")


@main.command()
@click.option("--all", "show_all", is_flag=True, help="Include archived (pruned) genomes.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (every genome).")
@click.option("--limit", type=click.IntRange(0), default=50, show_default=True,
              help="Rows in the table, best first (0: all).")
@repo_option
@one_line_errors
def status(show_all, as_json, limit, repo_dir) -> None:
    """Leaderboard of the population, best first."""
    from .report import leaderboard

    repo, cfg = evolution_repo(repo_dir)
    board = leaderboard(repo, cfg, include_archive=show_all)
    if as_json:
        click.echo(json.dumps(board, indent=1))
        return
    table = Table(title=f"{board['repo']} - generation {board['generation']} - operator {board['operator']}")
    for col in ("#", "genome", "gen", "val bpb", "test", "MFU", "status", "parent", "change"):
        table.add_column(col, justify="right" if col in ("#", "gen", "val bpb", "test", "MFU") else "left",
                         overflow="ellipsis", no_wrap=col != "change", min_width=12 if col == "change" else None)
    rows = board["genomes"][:limit] if limit else board["genomes"]
    for i, row in enumerate(rows, 1):
        bpb = "-" if row["fitness"] is None else f"{row['fitness']:.4f}" + (
            f" ±{row['spread']:.4f}" if row["n"] > 1 else "")
        test = "-" if row["test"] is None else f"{row['test']:.4f}"
        mfu = "-" if row["mfu"] is None else f"{row['mfu']:.1%}"
        name = row["name"] + (" [dim](archived)[/]" if row["archived"] else "")
        table.add_row(str(i), name, str(row["generation"]), bpb, test, mfu, row["status"] or "unevaluated",
                      row["parent"], escape(row["title"]))
    console.print(table)
    if len(rows) < len(board["genomes"]):
        console.print(f"[dim]{len(board['genomes']) - len(rows)} more not shown; --limit 0 shows all[/]")
    if board["lead_within_noise"]:
        console.print("[yellow]the lead is within noise: the top two differ by less than twice their seed spread[/]")
    usage = board["usage"]
    line = f"operator: {board['operator']}" + (f" ({board['model']})" if board["operator"] == "llm" else "")
    if usage["requests"]:
        line += (f"; LLM usage in committed mutations: {usage['requests']} requests, {usage['prompt_tokens']:,} "
                 f"prompt + {usage['completion_tokens']:,} completion tokens, ${usage['cost_usd']:.4f}")
    console.print(line)


@main.command()
@click.argument("genome")
@repo_option
@one_line_errors
def show(genome, repo_dir) -> None:
    """A genome's change vs its parent, its reasoning and its fitness runs."""
    from rich.syntax import Syntax

    from .report import describe

    repo, cfg = evolution_repo(repo_dir)
    d = describe(repo, cfg, genome)
    console.print(f"[bold]{d['name']}[/] {d['sha']}  {escape(d['title'])}")
    for k, v in d["trailers"].items():
        console.print(f"  [dim]{k}:[/] {escape(v)}")
    if d["body"]:
        console.print("\n" + escape(d["body"]) + "\n")
    f = d["fitness"]
    if f:
        console.print(f"fitness (val bpb) {f['fitness']} (spread {f['spread']}, {f['n']} runs, status {f['status']}); "
                      f"test bpb {f['test']} ({f['test_n']} runs; never used by selection)")
        for run in f["runs"]:
            speed = run.get("tokens_per_s")  # .get: a hand-written run holds only what scoring needs
            speed = round(speed) if isinstance(speed, (int, float)) else None
            console.print(f"  seed {run.get('seed')}: {run['status']} stage={run.get('stage')} "
                          f"val_bpb={run.get('val_bpb')} test_bpb={run.get('test_bpb')} tokens={run.get('tokens')} "
                          f"tokens/s={speed} {escape(str(run.get('error') or '')[:200])}")
    else:
        console.print("not evaluated yet")
    for fail in d["failures"]:
        console.print(f"[red]failed offspring[/] g{fail.generation} slot {fail.slot}: {escape(fail.reason)}")
    if d["diff"]:
        console.print(Syntax(d["diff"], "diff", theme="ansi_dark", background_color="default"))


@main.command()
@click.argument("genome")
@repo_option
@one_line_errors
def lineage(genome, repo_dir) -> None:
    """Ancestry of a genome back to the template, with fitness deltas."""
    from .report import ancestry

    repo, cfg = evolution_repo(repo_dir)
    table = Table(title=f"lineage of {genome}")
    for col in ("gen", "commit", "operator", "val bpb", "delta", "change"):
        table.add_column(col)
    for row in ancestry(repo, cfg, genome):
        delta = "" if row["delta"] is None else f"[{'green' if row['delta'] < 0 else 'red'}]{row['delta']:+.4f}[/]"
        bpb = "-" if row["fitness"] is None else f"{row['fitness']:.4f}"
        table.add_row(str(row["generation"]), row["sha"][:10], row["operator"], bpb, delta, escape(row["title"]))
    console.print(table)


@main.command()
@repo_option
@one_line_errors
def doctor(repo_dir) -> None:
    """What this machine enforces (sandbox, compute), then one tiny request to the configured LLM endpoint."""
    from .config import resolved_operator
    from .operators import OperatorError
    from .operators.llm import LlmOperator

    _, cfg = evolution_repo(repo_dir)
    s = cfg.llm
    machine = (f"sandbox   {sandbox_mod.describe()}\n"
               f"compute   {compute_mode(cfg.evaluation)} (each genome held to its slot's cores; [evaluation] compute)")
    if not s.model:
        console.print(escape(machine + "\nllm       none configured ([llm] model is empty): the offline catalogue mutates"))
        return
    where = (f"{s.model or '(no model)'} at {s.base_url or 'https://api.openai.com/v1'} "
             f"(key in ${s.api_key_env}: {'set' if os.environ.get(s.api_key_env or '') else 'not set'})")
    try:
        result = LlmOperator.from_config(cfg).ping()
    except (OperatorError, DarwinError) as e:
        raise DarwinError(f"{where}: {e}") from None
    priced = any(s.model.startswith(k) for k in s.prices)
    console.print(f"endpoint  {escape(where)}")
    console.print(f"operator  {resolved_operator(cfg)} ([evolution] operator = \"{cfg.evolution.operator}\")")
    console.print(f"reply     {escape(repr(result['reply']))} in {result['latency_s']:.2f}s")
    console.print(f"usage     {result['prompt_tokens']} prompt + {result['completion_tokens']} completion tokens, "
                  f"{result['requests']} request(s), ${result['cost_usd']:.6f}"
                  + ("" if priced else f" (no [llm.prices] entry for {s.model}: costs count as $0)"))
    console.print(escape(machine))


@main.command("memory")
@click.argument("agent")
@repo_option
@one_line_errors
def memory_cmd(agent, repo_dir) -> None:
    """Print what the LLM is shown when AGENT writes a mutation (after the system text and the code)."""
    from . import memory, population

    repo, cfg = evolution_repo(repo_dir)
    agent = population.agent_of(agent.removeprefix("darwin/"))
    agents = sorted({population.agent_of(n) for n in {**population.living(repo), **population.archived(repo)}})
    if agent not in agents:
        raise DarwinError(f"no agent named {agent!r} here; the agents are {', '.join(agents) or 'none'}")
    shown = memory.context(repo, cfg, agent, memory.history(repo, cfg))
    click.echo("\n\n".join(item.strip() for item in (shown.memory, *shown.inspiration) if item.strip()))


# ---- requests: what agents and people ask, reviewed like pull requests ------------------------------------

def request_line(doc: dict) -> str:
    change = "patch" if doc["commit"] else "no patch"
    return (f"{doc['id']:<5} {doc['state']:<9} {doc['kind']:<12} {doc['agent']:<10} g{doc['generation']:<4} "
            f"{change:<9} {doc['title']}")


@main.command("requests")
@click.option("--all", "show_all", is_flag=True, help="Include approved and rejected review.")
@click.option("--json", "as_json", is_flag=True, help="Every field of every listed request.")
@repo_option
@one_line_errors
def requests_cmd(show_all, as_json, repo_dir) -> None:
    """Requests waiting for review, one line each (with --all, decided ones too)."""
    from . import review

    repo, _ = evolution_repo(repo_dir)
    docs = review.load(repo) if show_all else review.open_requests(repo)
    if as_json:
        click.echo(json.dumps(docs, indent=1))
        return
    if not docs:
        console.print("no requests" if show_all else "no open requests (--all lists decided ones)")
    for doc in docs:
        click.echo(request_line(doc))  # one line each, never wrapped, so it pipes into grep and cut


@main.command()
@click.argument("rid", metavar="ID")
@click.option("--patch", "as_patch", is_flag=True, help="Print the change as `git format-patch` output.")
@repo_option
@one_line_errors
def review(rid, as_patch, repo_dir) -> None:
    """A request as a pull-request page: rationale, evidence, history, diff stat and diff."""
    from rich.syntax import Syntax

    from . import review
    from .report import ancestry

    repo, cfg = evolution_repo(repo_dir)
    doc = review.get(repo, rid)
    if as_patch:
        click.echo(review.format_patch(repo, doc), nl=False)
        return
    lineage = ancestry(repo, cfg, doc["base"])[-8:]  # read before printing: a broken note is then the only line
    console.print(f"[bold]{doc['id']}[/] {escape('[' + doc['state'] + ']')} {doc['kind']}: "
                  f"[bold]{escape(doc['title'])}[/]")
    console.print(f"requested by {escape(doc['agent'])} ({doc['via']}) in generation {doc['generation']}, "
                  f"against darwin/{doc['genome']} {doc['base'][:10]}; default --to: {', '.join(doc['to'])}")
    console.print("\n" + escape(doc["rationale"]) + "\n")
    ev = doc["evidence"]
    bpb = "unevaluated" if ev["fitness"] is None else f"{ev['fitness']:.4f} ±{ev['spread']:.4f} over {ev['runs']} runs"
    console.print(f"[bold]evidence[/]: darwin/{ev['genome']} val bpb {bpb} ({ev['status']})")
    if ev["cited"]:
        console.print(f"  cited: {escape(ev['cited'])}")
    console.print(f"[bold]fitness history of {ev['genome']}[/] (first-parent lineage, from the fitness notes):")
    for row in lineage:
        bpb = "-" if row["fitness"] is None else f"{row['fitness']:.4f}"
        delta = "" if row["delta"] is None else f"{row['delta']:+.4f}"
        console.print(f"  g{row['generation']:<3} {row['sha'][:10]} {bpb:>8} {delta:>8}  {escape(row['title'])}")
    console.print("[bold]history[/]:")
    for e in doc["events"]:
        said = e.get("reason") or e.get("text") or ""
        console.print(f"  {e['time']} {e['action']} by {escape(e['by'])}" + (f": {escape(said)}" if said else "")
                      + "".join(f"\n    merged into darwin/{b}: {sha[:10]}" for b, sha in e.get("merged", {}).items())
                      + (f"\n    data file {e['data']['path']} sha256 {e['data']['sha256']}" if "data" in e else ""))
    if doc["commit"]:
        console.print("\n" + escape(review.diff(repo, doc, stat=True).rstrip()))
        console.print(Syntax(review.diff(repo, doc), "diff", theme="ansi_dark", background_color="default"))
    else:
        console.print("\nno patch: this request asks for something other than a code change")


def answered(doc: dict) -> str:
    if doc["via"] == "person":
        return f"{escape(doc['agent'])} filed it"
    return f"{escape(doc['agent'])} sees the answer in its memory"


def identity_option(fn):
    return click.option("--by", help="Your name, as the record shows it (default: git's committer name).")(fn)


@main.command()
@click.argument("rid", metavar="ID")
@click.option("--to", "to", multiple=True, help="Living genome, agent (all its genomes) or `all`; repeatable "
              "(default: the genome the request was written for).")
@click.option("--data", type=click.Path(dir_okay=False, path_type=Path), help="For a data request: the file supplied.")
@click.option("--reason", default="", help="Why: the requester's memory shows it.")
@identity_option
@repo_option
@one_line_errors
def approve(rid, to, data, reason, by, repo_dir) -> None:
    """Approve a request: merge its change into living genomes (all or none) and record who and why."""
    from . import review

    repo, cfg = evolution_repo(repo_dir)
    doc = review.approve(repo, cfg, rid, by or review.reviewer(repo), reason, to, data)
    event = doc["events"][-1]
    for branch, sha in event.get("merged", {}).items():
        console.print(f"merged {rid} into darwin/{branch}: {sha[:10]} (scored in the next generation)")
    if "data" in event:
        d = event["data"]
        console.print(f"recorded {d['path']} ({d['bytes']:,} bytes, sha256 {d['sha256']}). This search keeps its "
                      f"corpus, so its fitness stays comparable; to train on the file, start a new evolution repo: "
                      f"`darwin-git init DIR --data {d['path']}`")
    console.print(f"approved {rid}; {answered(doc)}")


@main.command()
@click.argument("rid", metavar="ID")
@click.option("--reason", required=True, help="Why not: the requester's memory shows it.")
@identity_option
@repo_option
@one_line_errors
def reject(rid, reason, by, repo_dir) -> None:
    """Reject a request; nothing is merged."""
    from . import review

    repo, _ = evolution_repo(repo_dir)
    doc = review.reject(repo, rid, by or review.reviewer(repo), reason)
    console.print(f"rejected {rid}; {answered(doc)}")


@main.command()
@click.argument("rid", metavar="ID")
@click.argument("text")
@identity_option
@repo_option
@one_line_errors
def comment(rid, text, by, repo_dir) -> None:
    """Comment on a request (open or decided); the requester's memory shows it."""
    from . import review

    repo, _ = evolution_repo(repo_dir)
    review.comment(repo, rid, by or review.reviewer(repo), text)
    console.print(f"commented on {rid}")


@main.command()
@click.option("--from", "source", required=True, help="A patch file, or a branch (its changes since it left --to).")
@click.option("--title", required=True, help="One line, like a commit subject.")
@click.option("--to", "to", required=True, help="The living genome (or an agent with one) the change is for.")
@click.option("--rationale", default="", help="Why it should lower val bpb.")
@click.option("--kind", type=click.Choice(["script", "restructure", "data", "other"]), default="script",
              show_default=True)
@identity_option
@repo_option
@one_line_errors
def propose(source, title, to, rationale, kind, by, repo_dir) -> None:
    """File a person's change as a request, validated like a mutation; approve it to merge it."""
    from . import review

    repo, cfg = evolution_repo(repo_dir)
    doc = review.propose(repo, cfg, source, title, to, rationale, kind, by or review.reviewer(repo))
    console.print(f"filed {doc['id']}: {escape(doc['title'])} for darwin/{doc['genome']} "
                  f"(review it with `darwin-git review {doc['id']}`)")
