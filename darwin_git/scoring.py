"""Harness-owned scoring: bits per byte on held-out text, computed where the genome cannot reach.

Two processes, so that genome code never touches the score:
- the *runner* (sandboxed, `python -m darwin_git.scoring GENOME_DIR CKPT`) imports the
  genome's model module, loads its checkpoint and turns token windows it is sent into logits;
- the *scorer* (this harness process) owns the held-out tokens, sends only the inputs, and
  computes the cross-entropy itself. Targets never leave the scorer, windows are spaced so no
  target is ever an input, and a causality probe (change the future, the past's logits must
  not move) catches a model that peeks ahead.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import sandbox

ROWS = 8  # windows per round-trip
MAX_T = 1024


class ScoreError(Exception):
    """The genome's model broke the scoring protocol; the message says how."""


@dataclass
class Score:
    bpb: float
    tokens: int
    bytes: int


def _read_exact(stream, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = stream.read(n - len(buf))
        if not chunk:
            raise ScoreError(f"model process closed its output after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


class Runner:
    """Client side of the runner protocol: int64 headers, int64 tokens in, float32 logits out."""

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc
        self.block_size, self.vocab_size = np.frombuffer(_read_exact(proc.stdout, 16), dtype=np.int64)

    def logits(self, x: np.ndarray) -> np.ndarray:
        b, t = x.shape
        self.proc.stdin.write(np.array([b, t], dtype=np.int64).tobytes() + x.astype(np.int64).tobytes())
        self.proc.stdin.flush()
        raw = _read_exact(self.proc.stdout, b * t * int(self.vocab_size) * 4)
        return np.frombuffer(raw, dtype=np.float32).reshape(b, t, int(self.vocab_size))

    def close(self) -> None:
        try:
            self.proc.stdin.write(np.zeros(2, dtype=np.int64).tobytes())
            self.proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z -= z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def causality_probe(runner: Runner, tokens: np.ndarray, t: int, rng: np.random.Generator) -> None:
    """Raise ScoreError if changing later tokens changes earlier predictions."""
    x = np.stack([tokens[i * (t + 1): i * (t + 1) + t] for i in range(2)])
    changed = x.copy()
    half = t // 2
    changed[:, half:] = rng.integers(0, runner.vocab_size, size=changed[:, half:].shape)
    a, b = runner.logits(x)[:, :half], runner.logits(changed)[:, :half]
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ScoreError("model produced non-finite logits on held-out text")
    gap = float(np.abs(a - b).max())
    if not math.isfinite(gap) or gap > 1e-2 * (1.0 + float(np.abs(a).max())):
        raise ScoreError(f"causality probe failed: changing future tokens moved past logits by {gap:.3g}")


def score_split(runner: Runner, tokens: np.ndarray, token_bytes: np.ndarray, max_tokens: int) -> Score:
    """Bits per byte over windows of T inputs whose T targets are never fed to the model."""
    t = int(min(runner.block_size, MAX_T))
    stride = t + 1
    n_windows = max(1, min(len(tokens) // stride, math.ceil(max_tokens / t)))
    if len(tokens) < stride:
        raise ScoreError(f"held-out split has {len(tokens)} tokens, fewer than one window of {stride}")
    nats, nbytes, count = 0.0, 0, 0
    for start in range(0, n_windows, ROWS):
        rows = range(start, min(start + ROWS, n_windows))
        x = np.stack([tokens[r * stride: r * stride + t] for r in rows]).astype(np.int64)
        y = np.stack([tokens[r * stride + 1: r * stride + t + 1] for r in rows]).astype(np.int64)
        logp = _log_softmax(runner.logits(x))
        picked = np.take_along_axis(logp, y[..., None], axis=-1)[..., 0]
        if not np.isfinite(picked).all():
            raise ScoreError("model produced non-finite logits on held-out text")
        nats -= float(picked.sum())
        nbytes += int(token_bytes[y].sum())
        count += y.size
    return Score(bpb=nats / math.log(2) / nbytes, tokens=count, bytes=nbytes)


def score(genome_dir: Path, ckpt: Path, data_dir: Path, splits: tuple[str, ...], max_tokens: int,
          env: dict[str, str], jail: sandbox.Jail | None, timeout_s: float, memory_bytes: int,
          seed: int = 0) -> tuple[dict[str, Score], str]:
    """Score the checkpoint on each split; returns (scores, runner stderr tail). Raises ScoreError."""
    meta = json.loads((data_dir / "meta.json").read_text())
    token_bytes = np.array(meta["token_bytes"], dtype=np.int64)
    argv = [sys.executable, "-m", "darwin_git.scoring", str(genome_dir), str(ckpt)]
    err_path = ckpt.parent / "score-stderr.txt"
    with open(err_path, "wb") as err:
        proc = sandbox.spawn(argv, genome_dir, env, jail, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err)
        dog = sandbox.Watchdog(proc, timeout_s, memory_bytes)
        try:
            runner = Runner(proc)
            if runner.vocab_size != len(token_bytes):
                raise ScoreError(f"model vocab {runner.vocab_size} != corpus vocab {len(token_bytes)}")
            results = {}
            for split in splits:
                tokens = np.fromfile(data_dir / f"{split}.bin", dtype=np.uint16)
                if split == splits[0]:
                    causality_probe(runner, tokens, int(min(runner.block_size, MAX_T)), np.random.default_rng(seed))
                results[split] = score_split(runner, tokens, token_bytes, max_tokens)
            runner.close()
        except (ScoreError, BrokenPipeError, OSError, ValueError) as e:
            if dog.timed_out:
                raise ScoreError(f"scoring timed out after {timeout_s:.0f}s") from e
            if dog.over_memory:
                raise ScoreError("scoring exceeded the memory limit") from e
            raise ScoreError(str(e) or type(e).__name__) from e
        finally:
            sandbox.kill_group(proc)
            dog.join()
    return results, err_path.read_text(errors="replace")[-2000:]


def runner_main(genome_dir: str, ckpt: str) -> None:
    """Inside the sandbox: load the genome's model, answer logits for each window sent."""
    proto = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything the genome prints goes to stderr, never into the protocol
    sys.path.insert(0, genome_dir)
    import torch

    import model as genome_model

    torch.set_grad_enabled(False)
    net = genome_model.load(ckpt)
    net.eval()
    cfg = getattr(net, "cfg", None)
    block_size = int(getattr(net, "block_size", None) or cfg.block_size)
    vocab_size = int(getattr(net, "vocab_size", None) or cfg.vocab_size)
    proto.write(np.array([block_size, vocab_size], dtype=np.int64).tobytes())
    proto.flush()
    stdin = sys.stdin.buffer
    while True:
        b, t = np.frombuffer(_read_exact(stdin, 16), dtype=np.int64)
        if b == 0:
            return
        x = torch.from_numpy(np.frombuffer(_read_exact(stdin, int(b * t * 8)), dtype=np.int64).reshape(b, t).copy())
        out = net(x)
        logits = out[0] if isinstance(out, (tuple, list)) else out
        if tuple(logits.shape) != (b, t, vocab_size):
            raise SystemExit(f"model returned logits of shape {tuple(logits.shape)}, expected {(b, t, vocab_size)}")
        proto.write(logits.float().contiguous().numpy().astype(np.float32).tobytes())
        proto.flush()


if __name__ == "__main__":
    runner_main(sys.argv[1], sys.argv[2])
