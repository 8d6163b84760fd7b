"""What the terminal shows: every table, page and summary line the commands print, in one place.

Views take records the modules return and print them; they read nothing from git themselves.
"""
from __future__ import annotations

import click
from rich.console import Console
from rich.markup import escape
from rich.syntax import Syntax
from rich.table import Table

from .population import Summary
from .review import Request

console = Console(highlight=False)

RECORD_FIELDS = ("commit", "status", "stage", "val_bpb", "test_bpb", "tokens", "wall_s", "data_stopped_s", "overrun_s",
                 "tokens_per_s", "params", "flops_per_token", "mfu", "peak_mem", "seed", "budget", "device", "sandbox",
                 "eval_s", "error")


def record(run: dict) -> None:
    """One evaluation's fitness record, field by field."""
    table = Table(show_header=False, box=None)
    for key in RECORD_FIELDS:
        value = run.get(key)
        if value not in (None, ""):
            table.add_row(f"[bold]{key}[/]", f"{value:.4g}" if isinstance(value, float) else str(value))
    console.print(table)


def summary(done: Summary) -> None:
    best = done.best
    console.print(f"[bold]generation {done.generation}[/] done in {done.wall_s:.0f}s: "
                  f"best {best.name} {best.fitness:.4f} ({done.delta_vs_baseline:+.4f} vs baseline), "
                  f"{len(done.survivors)} survive, {len(done.pruned)} archived, "
                  f"{len(done.failures)} failed to breed")


def leaderboard(board: dict, limit: int) -> None:
    table = Table(title=f"{board['repo']} - generation {board['generation']} - {board['strategy']} search - "
                        f"operator {board['operator']}")
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
        line += (f"; LLM usage (children, failed proposals, digests): {usage['requests']} requests, {usage['prompt_tokens']:,} "
                 f"prompt + {usage['completion_tokens']:,} completion tokens, ${usage['cost_usd']:.4f}")
    console.print(line)


def genome(d: dict) -> None:
    """One genome: its commit, reasoning, fitness runs, failed offspring and diff."""
    console.print(f"[bold]{d['name']}[/] {d['sha']}  {escape(d['title'])}")
    for k, v in d["trailers"].items():
        console.print(f"  [dim]{k}:[/] {escape(v)}")
    if d["body"]:
        console.print("\n" + escape(d["body"]) + "\n")
    f = d["fitness"]
    if f.n:
        console.print(f"fitness (val bpb) {f.fitness} (spread {f.spread}, {f.n} runs, status {f.status}); "
                      f"test bpb {f.test} ({f.test_n} runs; never used by selection)")
        for run in f.runs:
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


def lineage(name: str, rows: list[dict]) -> None:
    table = Table(title=f"lineage of {name}")
    for col in ("gen", "commit", "operator", "val bpb", "delta", "change"):
        table.add_column(col)
    for row in rows:
        delta = "" if row["delta"] is None else f"[{'green' if row['delta'] < 0 else 'red'}]{row['delta']:+.4f}[/]"
        bpb = "-" if row["fitness"] is None else f"{row['fitness']:.4f}"
        table.add_row(str(row["generation"]), row["sha"][:10], row["operator"], bpb, delta, escape(row["title"]))
    console.print(table)


# ---- requests ------------------------------------------------------------------------------------------

def request_line(doc: Request) -> None:
    """One line per request, never wrapped, so the list pipes into grep and cut."""
    change = "patch" if doc.commit else "no patch"
    click.echo(f"{doc.id:<5} {doc.state:<9} {doc.kind:<12} {doc.agent:<10} g{doc.generation:<4} "
               f"{change:<9} {doc.title}")


def request_page(doc: Request, history: list[dict], stat: str, diff: str) -> None:
    """A request as a pull-request page: rationale, evidence, the base's fitness history, events, diff."""
    console.print(f"[bold]{doc.id}[/] {escape('[' + doc.state + ']')} {doc.kind}: [bold]{escape(doc.title)}[/]")
    console.print(f"requested by {escape(doc.agent)} ({doc.via}) in generation {doc.generation}, "
                  f"against darwin/{doc.genome} {doc.base[:10]}; default --to: {', '.join(doc.to)}")
    console.print("\n" + escape(doc.rationale) + "\n")
    ev = doc.evidence
    bpb = "unevaluated" if ev.fitness is None else f"{ev.fitness:.4f} ±{ev.spread:.4f} over {ev.runs} runs"
    console.print(f"[bold]evidence[/]: darwin/{ev.genome} val bpb {bpb} ({ev.status})")
    if ev.cited:
        console.print(f"  cited: {escape(ev.cited)}")
    console.print(f"[bold]fitness history of {ev.genome}[/] (first-parent lineage, from the fitness notes):")
    for row in history:
        bpb = "-" if row["fitness"] is None else f"{row['fitness']:.4f}"
        delta = "" if row["delta"] is None else f"{row['delta']:+.4f}"
        console.print(f"  g{row['generation']:<3} {row['sha'][:10]} {bpb:>8} {delta:>8}  {escape(row['title'])}")
    console.print("[bold]history[/]:")
    for e in doc.events:
        said = e.reason or e.text
        console.print(f"  {e.time} {e.action} by {escape(e.by)}" + (f": {escape(said)}" if said else "")
                      + "".join(f"\n    merged into darwin/{b}: {sha[:10]}" for b, sha in e.merged.items())
                      + (f"\n    data file {e.data['path']} sha256 {e.data['sha256']}" if e.data else ""))
    if doc.commit:
        console.print("\n" + escape(stat.rstrip()))
        console.print(Syntax(diff, "diff", theme="ansi_dark", background_color="default"))
    else:
        console.print("\nno patch: this request asks for something other than a code change")


def decided(doc: Request, verb: str) -> None:
    """`approved r3; ada sees the answer in its memory`: who hears of the decision."""
    heard = "filed it" if doc.via == "person" else "sees the answer in its memory"
    console.print(f"{verb} {doc.id}; {escape(doc.agent)} {heard}")
