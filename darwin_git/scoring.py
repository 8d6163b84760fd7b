"""Harness-owned scoring: bits per byte on held-out text, streamed so no model can see ahead.

Two processes, so that genome code never touches the score:
- the *runner* (sandboxed, `python -m darwin_git.scoring GENOME_DIR CKPT`) imports the
  genome's model module, loads its checkpoint and answers next-token logits;
- the *scorer* (this harness process) alone holds the held-out text. It reveals each window
  one position at a time, batched across windows, and sends token t only after it has the
  model's distribution for position t. Whatever the model computes or caches, it has only
  seen the past: soundness comes from the protocol, not from probing the model.

State across windows: every split is scored by a fresh runner, so nothing learnt while
scoring val can help on test. Within a split a stateful model may remember windows it has
already been scored on; windows are spread evenly over the split and sent in a shuffled order,
so that memory is text from elsewhere in the split, never the window's own future (a cache
model's legitimate, causal gain; README "What the score means").
"""
from __future__ import annotations

import math
import os
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from . import sandbox
from .compute import ComputeBox

MAX_CONTEXT = 1024  # the harness's cap on scoring context, whatever block size a genome claims
FRAME_BYTES = 1 << 23  # logits per reply at most (8 MiB): sets how many windows go in one chunk
NEW_ROWS, MORE = 1, 0  # frame flags: first tokens of new windows, or the next token of each window


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
    """Client side of the runner protocol: int64 tokens in, one float32 logits row per window out."""

    def __init__(self, proc: sandbox.Process):
        self.proc = proc
        self.block_size, self.vocab_size, self.incremental = struct.unpack("<qqq", _read_exact(proc.stdout, 24))

    def next(self, tokens: np.ndarray, flag: int) -> np.ndarray:
        """Reveal one token per window; get each window's logits for the token after it."""
        n = len(tokens)
        self.proc.stdin.write(struct.pack("<qq", n, flag) + tokens.astype("<i8").tobytes())
        self.proc.stdin.flush()
        raw = _read_exact(self.proc.stdout, n * self.vocab_size * 4)
        return np.frombuffer(raw, dtype="<f4").reshape(n, self.vocab_size)

    def close(self) -> None:
        try:
            self.proc.stdin.write(struct.pack("<qq", 0, MORE))
            self.proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z -= z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def windows(n_tokens: int, context: int, max_tokens: int) -> np.ndarray:
    """Start offsets of the scored windows (context + 1 tokens each, never overlapping), spread evenly
    over the split and shuffled; the same for every genome of a repo, so comparisons are paired."""
    stride = context + 1
    slots = n_tokens // stride
    if slots < 1:
        raise ScoreError(f"held-out split has {n_tokens} tokens, fewer than one window of {stride}")
    n = max(1, min(slots, math.ceil(max_tokens / context)))
    chosen = np.unique(np.linspace(0, slots - 1, n).round().astype(np.int64)) * stride
    return np.random.default_rng(0).permutation(chosen)


def score_split(runner: Runner, tokens: np.ndarray, token_bytes: np.ndarray, max_tokens: int,
                context: int) -> Score:
    """Bits per byte of the model's next-token predictions, each made before its token was sent."""
    t = int(min(runner.block_size, context, MAX_CONTEXT))
    if t < 1:
        raise ScoreError(f"model reports block_size {runner.block_size}; it must be at least 1")
    starts = windows(len(tokens), t, max_tokens)
    per_chunk = max(1, FRAME_BYTES // (4 * runner.vocab_size))
    nats, nbytes, count = 0.0, 0, 0
    for first in range(0, len(starts), per_chunk):
        rows = starts[first:first + per_chunk]
        text = np.stack([tokens[s:s + t + 1] for s in rows]).astype(np.int64)
        for pos in range(t):
            logp = _log_softmax(runner.next(text[:, pos], NEW_ROWS if pos == 0 else MORE))
            target = text[:, pos + 1]
            picked = logp[np.arange(len(rows)), target]
            if not np.isfinite(picked).all():
                raise ScoreError("model produced non-finite logits on held-out text")
            nats -= float(picked.sum())
            nbytes += int(token_bytes[target].sum())
            count += len(rows)
    return Score(bpb=nats / math.log(2) / nbytes, tokens=count, bytes=nbytes)


def score(genome_dir: Path, ckpt: Path, splits: dict[str, np.ndarray], token_bytes: np.ndarray, max_tokens: int,
          context: int, env: dict[str, str], jail: sandbox.Jail | None, timeout_s: float, memory_bytes: int,
          log_dir: Path, new_box: Callable[[str], ComputeBox | None] = lambda name: None) -> dict[str, Score]:
    """Score the checkpoint on each split, a fresh runner each (in a fresh compute box from `new_box`, so
    scoring takes no more of the machine than training may); raises ScoreError. The runner's stderr goes
    to `log_dir`, a harness folder the genome cannot reach."""
    argv = [sys.executable, "-m", "darwin_git.scoring", str(genome_dir), str(ckpt)]
    results = {}
    for name, tokens in splits.items():
        box = new_box(name)
        with open(log_dir / f"score-{name}-stderr.txt", "wb") as err:
            proc = sandbox.spawn(argv, genome_dir, env, jail, box, stdin=sandbox.PIPE, stdout=sandbox.PIPE,
                                 stderr=err)
            dog = sandbox.Watchdog(proc, timeout_s, memory_bytes)
            try:
                runner = Runner(proc)
                if runner.vocab_size != len(token_bytes):
                    raise ScoreError(f"model vocab {runner.vocab_size} != corpus vocab {len(token_bytes)}")
                results[name] = score_split(runner, tokens, token_bytes, max_tokens, context)
                runner.close()
            except (ScoreError, BrokenPipeError, OSError, ValueError) as e:
                if dog.timed_out:
                    raise ScoreError(f"scoring {name} timed out after {timeout_s:.0f}s") from e
                if dog.over_memory:
                    raise ScoreError("scoring exceeded the memory limit") from e
                raise ScoreError(str(e) or type(e).__name__) from e
            finally:
                sandbox.kill_group(proc)
                if box:
                    box.close()
                dog.join()
    return results


def runner_main(genome_dir: str, ckpt: str) -> None:
    """Inside the sandbox: load the genome's model, answer next-token logits for each token revealed."""
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
    step = getattr(net, "step", None)
    proto.write(struct.pack("<qqq", block_size, vocab_size, int(callable(step))))
    proto.flush()
    stdin = sys.stdin.buffer
    cache = prefix = None
    while True:
        n, flag = struct.unpack("<qq", _read_exact(stdin, 16))
        if n == 0:
            return
        x = torch.from_numpy(np.frombuffer(_read_exact(stdin, n * 8), dtype="<i8").copy())
        if callable(step):
            logits, cache = step(x, None if flag == NEW_ROWS else cache)
        else:  # full-prefix fallback: correct for any causal model, quadratic in the context
            prefix = x[:, None] if flag == NEW_ROWS else torch.cat((prefix, x[:, None]), dim=1)
            out = net(prefix)
            logits = (out[0] if isinstance(out, (tuple, list)) else out)[:, -1]
        if tuple(logits.shape) != (n, vocab_size):
            raise SystemExit(f"model returned logits of shape {tuple(logits.shape)}, expected {(n, vocab_size)}")
        proto.write(logits.float().contiguous().numpy().astype("<f4").tobytes())
        proto.flush()


if __name__ == "__main__":
    runner_main(sys.argv[1], sys.argv[2])
