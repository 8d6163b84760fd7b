"""How fast is `darwin-git status` on a large population? Goal: under a second for 10,000 genomes.

Builds a synthetic evolution repo with `git fast-import` (seconds, no training): the template root
commit, N one-line mutations of train.py (each on its own branch refs/heads/darwin/g<G>-<I>, a fifth
of them archived under refs/darwin/archive/), a fitness note per genome with two realistic runs, and
a generations log with a plan and a summary per generation. Then it times

  * report.leaderboard() in-process (best of 3), counting the git processes one call spawns: the
    count must not grow with the population, or status becomes a fork storm;
  * `darwin-git status --json` and the rich-table `darwin-git status` as subprocesses (best of 3),
    which adds interpreter start-up, imports and rendering.

Exits 1 when leaderboard() takes more than a second.

    python benchmarks/status_10k.py [--genomes 10000] [--keep DIR]
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from darwin_git import assets, fitness, population, report
from darwin_git.config import CONFIG, Config

PER_GENERATION = 10  # offspring per generation, so 10,000 genomes span 1,000 generations
ARCHIVED_SHARE = 0.2
FAILED_SHARE = 0.1
LIMIT_S = 1.0
AUTHOR = "darwin-git <darwin-git@localhost> 1700000000 +0000"


def data(text: str) -> bytes:
    """A fast-import `data` block: exact byte count, then the bytes."""
    raw = text.encode()
    return b"data %d\n%s\n" % (len(raw), raw)


def fast_import(repo: Path, chunks: list[bytes]) -> dict[str, str]:
    """Feed one fast-import stream; return its marks as {":mark": sha}."""
    marks = repo / ".git" / "bench-marks"
    subprocess.run(["git", "-C", str(repo), "fast-import", "--quiet", f"--export-marks={marks}"],
                   input=b"".join(chunks), check=True)
    return dict(line.split() for line in marks.read_text().splitlines())


def run_record(rng: random.Random, commit: str, tree: str, seed: int, failed: bool) -> dict:
    """One evaluation, shaped like evaluator.FitnessRecord.to_dict()."""
    bpb = None if failed else round(rng.uniform(1.9, 2.6), 6)
    return {
        "commit": commit, "status": "crashed" if failed else "ok", "stage": "smoke" if failed else "score",
        "test_bpb": bpb, "val_bpb": bpb and round(bpb + rng.uniform(-0.02, 0.02), 6),
        "mfu": None if failed else round(rng.uniform(0.01, 0.4), 5),
        "tokens_per_s": None if failed else round(rng.uniform(2e4, 9e5), 1), "params": 816_768,
        "wall_s": round(rng.uniform(50, 75), 2), "peak_mem": rng.randrange(400, 900) << 20, "seed": seed,
        "budget": "60s", "device": "cuda", "sandbox": "bwrap",
        "error": "RuntimeError: shape mismatch in attention (smoke step 1)" if failed else "",
        "eval_s": round(rng.uniform(60, 90), 2), "scored_tokens": 32768,
        "reported": {} if failed else {"val_loss": round(rng.uniform(1.3, 1.8), 4), "steps": rng.randrange(300, 900)},
        "env": {"python": "3.11.9", "torch": "2.4.1", "host": "bench"}, "tree": tree,
        "time": "2024-01-01T00:00:00Z",
    }


def build_repo(repo: Path, n: int, rng: random.Random) -> None:
    """The template root, n children, their fitness notes and a generations log, in three imports."""
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    genome = assets.asset_dir("genome")
    train = (genome / "train.py").read_text()
    assert "learning_rate = 2e-3\n" in train, "genome/train.py lost its learning_rate knob"
    files = {f: (genome / f).read_text() for f in ("model.py", "train.py", "GENOME.md")}
    files[CONFIG] = Config().to_toml()
    root = [b"commit refs/heads/main\nmark :1\n", f"committer {AUTHOR}\n".encode(),
            data("Genome template: a compact GPT trainer (generation 0)")]
    root += [b"M 100644 inline %s\n%s" % (name.encode(), data(text)) for name, text in files.items()]
    root_sha = fast_import(repo, root)[":1"]
    subprocess.run(["git", "-C", str(repo), "reset", "-q", "--hard"], check=True)  # the CLI reads darwin.toml

    names = [f"g{1 + i // PER_GENERATION}-{i % PER_GENERATION}" for i in range(n)]
    children = []
    for i, name in enumerate(names):
        lr = f"{2e-3 * rng.uniform(0.5, 2.0):.3g}"
        ref = (population.ARCHIVE if rng.random() < ARCHIVED_SHARE else population.LIVE) + name
        message = (f"Scale learning_rate 2e-3 -> {lr}\n\n"
                   f"A perturbation of the learning rate: the parent's loss curve suggests the step size is\n"
                   f"off by a modest factor, so try {lr} and let selection decide.\n\n"
                   f"Darwin-Agent: {name}\nDarwin-Parent: {root_sha}\nDarwin-Operator: offline:perturb\n"
                   f"Darwin-Generation: {1 + i // PER_GENERATION}\n")
        children += [f"commit {ref}\nmark :{i + 1}\ncommitter {AUTHOR}\n".encode(), data(message),
                     f"from {root_sha}\nM 100644 inline train.py\n".encode(),
                     data(train.replace("learning_rate = 2e-3\n", f"learning_rate = {lr}\n"))]
    shas = fast_import(repo, children)

    notes = [f"commit {Config().notes.fitness}\ncommitter {AUTHOR}\n".encode(), data("fitness of every genome")]
    for i in range(n):
        sha, failed = shas[f":{i + 1}"], rng.random() < FAILED_SHARE
        runs = [run_record(rng, sha, "0" * 40, 1337 + k, failed and k == 1) for k in range(2)]
        notes += [f"N inline {sha}\n".encode(), data(fitness.summarize(runs).text())]
    log = [f"commit {population.GENERATIONS}\ncommitter {AUTHOR}\n".encode(), data("generations log")]
    for g in range(1 + (n - 1) // PER_GENERATION + 1):
        members = names[(g - 1) * PER_GENERATION: g * PER_GENERATION] if g else []
        plan = {"generation": g, "parents": {m: root_sha for m in members}, "started": 1700000000 + g}
        summary = {"generation": g, "pruned": members[4:], "wall_s": 612.0,
                   "best": {"name": members[0] if members else "ada", "sha": root_sha, "fitness": 2.2, "spread": 0}}
        log += [f"M 100644 inline g{g:04d}/{kind}.json\n".encode() + data(json.dumps(doc, indent=1, sort_keys=True))
                for kind, doc in (("plan", plan), ("summary", summary)) if g or kind == "summary"]
    fast_import(repo, notes + log)


def best_of(times: int, fn: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(times):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def count_git_processes(fn: Callable[[], object]) -> int:
    """How many `git` processes `fn` starts (every subprocess helper goes through Popen)."""
    count, original = 0, subprocess.Popen

    class Counting(original):
        def __init__(self, args, *rest, **kwargs) -> None:
            nonlocal count
            argv = [args] if isinstance(args, (str, bytes)) else list(args)
            count += bool(argv) and Path(str(argv[0])).name == "git"
            super().__init__(args, *rest, **kwargs)

    subprocess.Popen = Counting
    try:
        fn()
    finally:
        subprocess.Popen = original
    return count


def cli(repo: Path, *args: str) -> Callable[[], object]:
    exe = Path(sys.executable).with_name("darwin-git")
    command = [str(exe) if exe.exists() else shutil.which("darwin-git") or "darwin-git", "status", *args,
               "-C", str(repo)]
    return lambda: subprocess.run(command, stdout=subprocess.DEVNULL, check=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--genomes", type=int, default=10_000)
    ap.add_argument("--keep", type=Path, help="build the repo here and keep it (default: a temp dir, removed)")
    args = ap.parse_args()

    tmp = None if args.keep else tempfile.TemporaryDirectory(prefix="darwin-status-")
    repo = args.keep or Path(tmp.name) / "repo"
    if repo.exists() and any(repo.iterdir()):
        sys.exit(f"{repo} is not empty; pass a new directory to --keep")
    try:
        t0 = time.perf_counter()
        build_repo(repo, args.genomes, random.Random(1337))
        build_s = time.perf_counter() - t0
        cfg = Config()
        board = report.leaderboard(repo, cfg)
        assert len(board["genomes"]) == len(population.living(repo)), "leaderboard lost genomes"
        rows = [
            ("leaderboard() in-process", best_of(3, lambda: report.leaderboard(repo, cfg)),
             count_git_processes(lambda: report.leaderboard(repo, cfg))),
            ("leaderboard(include_archive)", best_of(3, lambda: report.leaderboard(repo, cfg, True)),
             count_git_processes(lambda: report.leaderboard(repo, cfg, True))),
            ("darwin-git status --json", best_of(3, cli(repo, "--json")), None),
            ("darwin-git status (table)", best_of(3, cli(repo)), None),
        ]
    finally:
        if tmp:
            tmp.cleanup()

    print(f"{args.genomes} genomes ({len(board['genomes'])} living), repo built in {build_s:.1f}s"
          + (f", kept at {repo}" if args.keep else ""))
    print(f"{'measure':<30} {'seconds':>8} {'git procs':>10}")
    for label, seconds, procs in rows:
        print(f"{label:<30} {seconds:>8.3f} {'' if procs is None else procs:>10}")
    ok = rows[0][1] <= LIMIT_S
    print(f"leaderboard {'within' if ok else 'OVER'} the {LIMIT_S:.0f}s goal")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
