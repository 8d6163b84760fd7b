"""Where an evaluation's wall time goes: seconds per stage, and the share that is not training.

Evaluates the template genome the way a generation evaluates a child (sandbox, compute box, val
scored; `--test` adds the test split and skips the smoke, as a survivor's confirmation run does) at a
time budget and at a token budget, after one warm-up evaluation, so the harness process's one-time
costs (importing torch, measuring the CPU's peak FLOP/s) are left out as they are in a long
generation. The stages come from the record itself (`stage_s` in every fitness note).

    python benchmarks/overhead.py [--data shakespeare] [--budgets 60s 160000tokens] [--test] [--no-smoke]

Run it alone on the machine: a parallel test run halves every figure.
"""
from __future__ import annotations

import argparse
import tempfile
from dataclasses import replace
from pathlib import Path

from darwin_git import sandbox
from darwin_git.config import EvalSettings
from darwin_git.corpus import prepare
from darwin_git.evaluator import evaluate
from fitness_cost import template_repo


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="shakespeare")
    ap.add_argument("--budgets", nargs="+", default=["60s", "160000tokens"])
    ap.add_argument("--test", action="store_true",
                    help="score the test split too and skip the smoke (a confirmation run)")
    ap.add_argument("--no-smoke", action="store_true", help="as with [evaluation] smoke = false")
    args = ap.parse_args()
    corpus = prepare(args.data, "char")
    settings = EvalSettings(data=args.data, smoke=not args.no_smoke)
    with tempfile.TemporaryDirectory(prefix="darwin-overhead-") as tmp:
        repo = template_repo(Path(tmp))
        evaluate(repo, "HEAD", replace(settings, budget="2080tokens"), corpus, test=False)  # warm-up
        print(f"sandbox: {'bwrap' if sandbox.bwrap_works() else 'none'}; threads per genome: {settings.threads}; "
              f"scored: {'val and test' if args.test else 'val'} ({settings.score_tokens} predictions each)")
        parts = ("worktree", "smoke", "train", "score", "harness", "cleanup")
        print(f"{'budget':<14}" + "".join(f"{p:>10}" for p in parts) + f"{'total':>10}  not training")
        for budget in args.budgets:
            record = evaluate(repo, "HEAD", replace(settings, budget=budget), corpus, test=args.test,
                              smoke=not args.test)
            assert record.status == "ok", record.error
            share = 1 - record.stage_s["train"] / record.eval_s
            print(f"{budget:<14}" + "".join(f"{record.stage_s.get(p, 0.0):>10.2f}" for p in parts)
                  + f"{record.eval_s:>10.2f}  {share:.1%}  ({record.tokens:,} tokens, val {record.val_bpb:.4f})")


if __name__ == "__main__":
    main()
