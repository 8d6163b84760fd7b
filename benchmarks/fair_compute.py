"""Does an honest genome keep its compute beside a hog? Tokens it trains alone vs in a 2-slot generation.

For each enforcement mechanism (the cgroup this machine offers, plain pinning, none), the template
trains alone on slot 0, then again on slot 0 while a hog (the template plus as many threads and busy
worker processes as the machine has cores) trains on slot 1. Goal: within 10% of the tokens alone.

    python benchmarks/fair_compute.py [--budget 20s] [--data FILE]

Run it alone on the machine: anything else running takes cores from the slots.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from dataclasses import replace
from pathlib import Path

from darwin_git import compute
from darwin_git.corpus import prepare
from darwin_git.config import EvalSettings, ExecutorSettings
from darwin_git.executors import Job
from darwin_git.executors.local import LocalExecutor

GENOME = Path(__file__).resolve().parent.parent / "genome"
HOG = ("import multiprocessing\n\n\ndef _spin():\n    while True:\n        pass\n\n\n"
       "torch.set_num_threads(os.cpu_count())\nos.sched_setaffinity(0, range(os.cpu_count()))\n"
       "for _ in range(os.cpu_count()):\n    multiprocessing.Process(target=_spin, daemon=True).start()\n")


def repo_with_hog(root: Path) -> tuple[Path, str, str]:
    repo = root / "repo"
    repo.mkdir()
    for f in ("model.py", "train.py"):
        shutil.copy(GENOME / f, repo / f)

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repo), "-c", "user.name=b", "-c", "user.email=b@b", *args],
                              check=True, capture_output=True, text=True).stdout.strip()

    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "template")
    honest = git("rev-parse", "HEAD")
    text = (repo / "train.py").read_text()
    anchor = "from model import GPT, GPTConfig\n"
    (repo / "train.py").write_text(text.replace(anchor, anchor + HOG, 1))
    git("commit", "-qam", "hog")
    return repo, honest, git("rev-parse", "HEAD")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", default="20s")
    ap.add_argument("--data", default="shakespeare")
    args = ap.parse_args()
    corpus = prepare(args.data, "char")
    best = compute.enforcement()
    print(f"machine: {len(compute.slot_cores(0, 64))} cores; best enforcement here: {best}; budget {args.budget}")
    with tempfile.TemporaryDirectory(prefix="darwin-fair-") as tmp:
        repo, honest, hog = repo_with_hog(Path(tmp))
        for mode in dict.fromkeys(["auto", "affinity", "none"]):
            settings = replace(EvalSettings(data=args.data, budget=args.budget, compute=mode), score_tokens=4096)
            label = best if mode == "auto" else mode
            one = LocalExecutor.for_device(ExecutorSettings(slots=1), "cpu")
            two = LocalExecutor.for_device(ExecutorSettings(slots=2), "cpu")
            alone = dict(one.run(repo, [Job("honest", honest, 1, test=False)], settings, corpus))
            pair = {job.name: rec for job, rec in
                    two.run(repo, [Job("honest", honest, 1, test=False), Job("hog", hog, 1, test=False)],
                            settings, corpus)}
            a, b, h = next(iter(alone.values())), pair["honest"], pair["hog"]
            ratio = b["tokens"] / a["tokens"] if a["tokens"] and b["tokens"] else float("nan")
            print(f"{label:<10} honest alone {a['tokens']:>7,} tokens | beside the hog {b['tokens'] or 0:>7,} "
                  f"({ratio:.0%}) | hog: {h['status']}, {h['tokens'] or 0:,} tokens, cpu {h['cpu_s']} s "
                  f"in {h['wall_s']} s on {h['cores']} core")


if __name__ == "__main__":
    main()
