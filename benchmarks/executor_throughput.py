"""Evaluation throughput: genomes per hour for 1 slot vs N CPU slots, and K genomes packed per GPU.

Runs real evaluations of the genome template (distinct seeds, so each is a full check, smoke,
train and score) through the local executor, and prints genomes/hour per layout. CPU threads
per genome stay fixed (`--threads`, default 1, as in [evaluation] threads) so every layout
produces the same fitness numbers; one extra row gives the single slot all N threads, the
layout a sequential run would pick, for comparison. GPU rows run only when a GPU is visible.

    python benchmarks/executor_throughput.py --jobs 8 --slots 2 --budget 20800tokens
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from rich.console import Console

from darwin_git.corpus import prepare
from darwin_git.config import EvalSettings, ExecutorSettings
from darwin_git.executors import Job, executor_for
from darwin_git.executors.local import visible_devices

TEMPLATE = Path(__file__).resolve().parent.parent / "genome"


def template_repo(root: Path) -> tuple[Path, str]:
    repo = root / "repo"
    repo.mkdir()
    for f in ("model.py", "train.py"):
        shutil.copy(TEMPLATE / f, repo / f)
    env = {**os.environ, "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@localhost",
           "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@localhost"}
    for args in (["init", "-q"], ["add", "."], ["commit", "-qm", "template"]):
        subprocess.run(["git", "-C", str(repo), *args], check=True, env=env)
    sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], check=True, capture_output=True,
                         text=True).stdout.strip()
    return repo, sha


def measure(label: str, repo: Path, sha: str, settings: EvalSettings, executor: ExecutorSettings, jobs: int,
            console: Console) -> tuple[str, int, float, float, float]:
    corpus = prepare(settings.data, settings.tokenizer)
    run = executor_for(executor, settings)
    t0 = time.monotonic()
    records = [r for _, r in run.run(repo, [Job(f"seed{i}", sha, i) for i in range(jobs)], settings, corpus,
                                     console)]
    wall = time.monotonic() - t0
    bad = [r for r in records if r["status"] != "ok"]
    if bad:
        raise SystemExit(f"{label}: {len(bad)} evaluation(s) failed: {bad[0]['status']} {bad[0]['error'][:300]}")
    mean_eval = sum(r["eval_s"] for r in records) / len(records)
    row = (label, len(run.slots), wall, mean_eval, jobs / wall * 3600)
    console.print(f"{label}: [bold]{row[4]:.0f} genomes/hour[/] ({wall:.1f}s wall, {mean_eval:.1f}s per evaluation)")
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=8, help="evaluations per layout")
    ap.add_argument("--slots", type=int, default=os.cpu_count() or 1, help="N for the N-slot CPU row")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads per genome (fixed across layouts)")
    ap.add_argument("--budget", default="20800tokens")
    ap.add_argument("--gpu-budget", default="208000tokens")
    ap.add_argument("--per-device", default="1,2,4,8", help="K values for the K-per-GPU rows")
    ap.add_argument("--data", default="shakespeare", help="corpus: shakespeare or a UTF-8 text file")
    args = ap.parse_args()

    console = Console(highlight=False)
    data = args.data if args.data == "shakespeare" else str(Path(args.data).resolve())
    settings = EvalSettings(budget=args.budget, data=data, threads=args.threads, memory_mb=4000,
                            score_tokens=8192, peak_flops=1e11)
    with tempfile.TemporaryDirectory(prefix="darwin-throughput-") as tmp:
        repo, sha = template_repo(Path(tmp))
        console.print(f"[bold]CPU[/] ({os.cpu_count()} cores), budget {args.budget}, {args.jobs} evaluations per row")
        rows = [measure("1 slot", repo, sha, settings, ExecutorSettings(slots=1), args.jobs, console),
                measure(f"{args.slots} slots", repo, sha, settings, ExecutorSettings(slots=args.slots), args.jobs,
                        console),
                measure(f"1 slot x {args.slots} threads", repo, sha, replace(settings, threads=args.slots),
                        ExecutorSettings(slots=1), args.jobs, console)]
        devices = visible_devices()
        if not devices:
            console.print("[yellow]no GPU visible here (CUDA_VISIBLE_DEVICES / nvidia-smi -L): "
                          "K-per-GPU packing not measured[/]")
        else:
            gpu = replace(settings, device="cuda", budget=args.gpu_budget, peak_flops=0)
            console.print(f"[bold]GPU[/] ({len(devices)} visible), budget {args.gpu_budget}")
            for k in (int(x) for x in args.per_device.split(",")):
                rows.append(measure(f"{k} per GPU", repo, sha, gpu, ExecutorSettings(per_device=k),
                                    max(args.jobs, 2 * k * len(devices)), console))
    print(f"\n{'layout':<28} {'slots':>5} {'wall s':>8} {'eval s':>7} {'genomes/h':>10}")
    for label, slots, wall, mean_eval, per_hour in rows:
        print(f"{label:<28} {slots:>5} {wall:>8.1f} {mean_eval:>7.1f} {per_hour:>10.0f}")


if __name__ == "__main__":
    main()
