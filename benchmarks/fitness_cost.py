"""What honest fitness costs, for the template genome on this machine.

Prints:
  1. scoring seconds for one split: streamed through the sandboxed runner (KV-cache `step` and the
     full-prefix fallback), against the compute the old window protocol did (one forward per window,
     in process: a lower bound on what it cost, since its process start is left out);
  2. training tokens/s through the harness's metered data channel vs direct reads of train.bin;
  3. the share of a whole evaluation that is not training, at a 60 s and at a token budget.

    python benchmarks/fitness_cost.py [--data FILE] [--tokens 160000] [--seconds 60] [--score-tokens 32768]

Run it alone on the machine: a parallel test run halves every figure.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from darwin_git import sandbox, scoring
from darwin_git.channel import Channel, Meter
from darwin_git.corpus import prepare
from darwin_git.config import EvalSettings
from darwin_git.evaluator import evaluate

GENOME = Path(__file__).resolve().parent.parent / "genome"
DIRECT = '''
_train = np.memmap(os.path.join(os.environ["DIRECT_TRAIN"]), dtype=np.uint16, mode="r")
_left = int(os.environ["DIRECT_REQUESTS"])


def fetch(offsets, length):
    """Direct reads, the way genomes read data before the channel: no harness in the loop."""
    global _left, progress
    if _left == 0:
        return None
    _left -= 1
    progress = 1 - _left / int(os.environ["DIRECT_REQUESTS"])
    return np.stack([_train[o:o + length] for o in offsets])

'''


def template_repo(root: Path) -> Path:
    repo = root / "repo"
    repo.mkdir()
    for f in ("model.py", "train.py"):
        shutil.copy(GENOME / f, repo / f)
    for args in (["init", "-q"], ["add", "."], ["-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "t"]):
        subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)
    return repo


def train_once(genome: Path, out: Path, corpus, tokens: int, direct: bool) -> dict:
    """Run the template's train.py outside any sandbox; return its own report (steps, train_s)."""
    env = {**os.environ, "DARWIN_DATA": str(out / "data"), "DARWIN_OUT": str(out), "DARWIN_SEED": "1",
           "DARWIN_DEVICE": "cpu", "OMP_NUM_THREADS": "1"}
    (out / "data").mkdir(parents=True)
    (out / "data" / "meta.json").write_text(json.dumps(corpus.genome_meta()))
    requests = tokens // (16 * 65)
    channel = Channel(corpus.tokens("train"), Meter("requests", requests, 3600))
    env.update(channel.env())
    if direct:
        env.update(DIRECT_TRAIN=str(corpus.public / "train.bin"), DIRECT_REQUESTS=str(requests))
    proc = subprocess.Popen([sys.executable, "train.py"], cwd=genome, env=env, pass_fds=channel.child_fds,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    channel.start()
    _, err = proc.communicate()
    channel.close()
    assert proc.returncode == 0, err.decode()[-2000:]
    return json.loads((out / "metrics.json").read_text())


def channel_vs_direct(corpus, tokens: int, work: Path) -> None:
    text = (GENOME / "train.py").read_text()
    direct = work / "direct"
    direct.mkdir(parents=True)
    shutil.copy(GENOME / "model.py", direct / "model.py")
    start = text.index("def fetch(")
    end = text.index("def get_batch(")
    (direct / "train.py").write_text(text[:start] + DIRECT + text[end:])
    for name, genome, is_direct in (("metered channel", GENOME, False), ("direct reads", direct, True)):
        rep = train_once(genome, work / name.replace(" ", "-"), corpus, tokens, is_direct)
        print(f"  {name:<16} {rep['steps']} steps, {rep['steps'] * 16 * 64 / rep['train_s']:>8,.0f} tokens/s")


def score_cost(settings: EvalSettings, corpus, work: Path) -> None:
    out = work / "ckpt"  # a short-trained template checkpoint, scored several ways
    train_once(GENOME, out, corpus, 20800, direct=False)
    ckpt = out / "ckpt.pt"
    tokens = corpus.tokens("val")
    token_bytes = np.array(corpus.meta["token_bytes"], dtype=np.int64)
    env = sandbox.clean_env({"HOME": str(work), "TMPDIR": str(work), "OMP_NUM_THREADS": "1",
                             "PYTHONPATH": str(sandbox.package_dir().parent)})
    jail = sandbox.Jail(writable=[work / "tmp"], readable=[GENOME, out]) if sandbox.bwrap_works() else None
    (work / "tmp").mkdir()
    nostep = work / "nostep"
    nostep.mkdir()
    (nostep / "model.py").write_text((GENOME / "model.py").read_text().replace("    def step(", "    def _step("))
    for label, genome in (("streamed, step (KV cache)", GENOME), ("streamed, full-prefix", nostep)):
        if jail:
            jail = replace(jail, readable=[genome, out])
        t = time.perf_counter()
        got = scoring.score(genome, ckpt, {"val": tokens}, token_bytes, settings.score_tokens, settings.score_context,
                            env, jail, 600, 8 << 30, work)
        print(f"  {label:<28} {time.perf_counter() - t:6.2f} s  ({got['val'].tokens} predictions, "
              f"{got['val'].bpb:.4f} bpb, runner start included)")
    sys.path.insert(0, str(GENOME))
    import torch

    import model as template_model

    torch.set_num_threads(1)
    net = template_model.load(str(ckpt)).eval()
    t_ctx = net.cfg.block_size
    starts = scoring.windows(len(tokens), t_ctx, settings.score_tokens)
    t = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(starts), 8):  # the old protocol: 8 whole windows per round trip
            x = torch.from_numpy(np.stack([tokens[s:s + t_ctx] for s in starts[i:i + 8]]).astype(np.int64))
            net(x)
    print(f"  {'before: whole windows':<28} {time.perf_counter() - t:6.2f} s  (compute only, in process)")
    text = np.stack([tokens[s:s + t_ctx + 1] for s in starts]).astype(np.int64)
    t = time.perf_counter()
    with torch.no_grad():
        cache = None
        for pos in range(t_ctx):  # the same predictions, one position at a time through the KV cache
            _, cache = net.step(torch.from_numpy(text[:, pos]), cache)
    print(f"  {'streamed: step, compute only':<28} {time.perf_counter() - t:6.2f} s  (in process)")


def overhead(repo: Path, settings: EvalSettings, corpus, budgets: list[str]) -> None:
    for budget in budgets:
        record = evaluate(repo, "HEAD", replace(settings, budget=budget), corpus)
        assert record.status == "ok", record.error
        share = 1 - record.wall_s / record.eval_s
        print(f"  {budget:<14} evaluation {record.eval_s:6.1f} s, train stage {record.wall_s:6.1f} s "
              f"({record.tokens:,} tokens served), not training {share:.0%}; val {record.val_bpb:.4f} "
              f"test {record.test_bpb:.4f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="shakespeare")
    ap.add_argument("--tokens", type=int, default=160_000)
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--score-tokens", type=int, default=32768)
    args = ap.parse_args()
    corpus = prepare(args.data, "char")
    settings = EvalSettings(data=args.data, score_tokens=args.score_tokens)
    with tempfile.TemporaryDirectory(prefix="darwin-fitness-cost-") as tmp:
        work = Path(tmp)
        repo = template_repo(work)
        print(f"sandbox: {'bwrap' if sandbox.bwrap_works() else 'none'}; cpu threads per genome: 1")
        print("1. scoring one split (val):")
        score_cost(settings, corpus, work / "score")
        print(f"2. training throughput, {args.tokens:,} tokens:")
        channel_vs_direct(corpus, args.tokens, work / "train")
        print("3. non-training share of an evaluation (check, smoke, worktree, scoring val and test):")
        overhead(repo, settings, corpus, [f"{args.seconds}s", f"{args.tokens}tokens"])


if __name__ == "__main__":
    main()
