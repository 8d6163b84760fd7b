"""The training data channel: the genome's only source of training tokens, metered by the harness.

A genome never opens the corpus. Its train.py asks the harness for windows over a pipe pair
(`DARWIN_CHANNEL="<request fd>,<reply fd>"`), choosing offsets, window length and batch size
itself, so data-pipeline mutations stay possible; the harness counts every token it serves and
stops serving when the budget is spent, and the genome then has a short grace to exit:
  tokens    once the served count would pass the budget (whole requests only)
  s         at the deadline, by the harness's clock from the process start
  requests  after N requests (the smoke stage's "two batches")
Either way nothing is served after `deadline_s`. Then the genome must save its checkpoint and
exit within the grace, or the harness kills the whole process group (evaluator.py).

Wire format, little-endian, one request at a time:
  request  int64 rows, int64 length, int64[rows] offsets into train (0 <= offset <= len - length)
  reply    int64 granted (rows served; 0: the budget is spent; -1: bad request, the channel closes),
           float64 progress (0..1 of the budget, after this request), then uint16[rows * length] tokens
"""
from __future__ import annotations

import os
import struct
import threading
import time
from dataclasses import dataclass

import numpy as np

MAX_REQUEST_TOKENS = 1 << 24  # 32 MiB of tokens per reply: far above any batch, small enough to hold
KINDS = ("tokens", "s", "requests")


@dataclass(frozen=True)
class Meter:
    """How much data a run may take: `amount` of `kind`, and never anything after `deadline_s`."""

    kind: str
    amount: float
    deadline_s: float


def _read_exact(fd: int, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class Channel:
    """Harness side: serves windows of `train` to one genome process and counts what it served."""

    def __init__(self, train: np.ndarray, meter: Meter):
        if meter.kind not in KINDS:
            raise ValueError(f"unknown meter kind {meter.kind!r}")
        self.train, self.meter = train, meter
        self.req_r, self.req_w = os.pipe()
        self.rep_r, self.rep_w = os.pipe()
        self.tokens = self.requests = 0
        self.refused = ""  # why a request was refused as malformed, if one was
        self.spent_at: float | None = None  # seconds after start when data first stopped
        self.t0 = time.monotonic()
        self._thread: threading.Thread | None = None

    @property
    def child_fds(self) -> tuple[int, int]:
        """The two ends the genome process inherits."""
        return self.req_w, self.rep_r

    def env(self) -> dict[str, str]:
        return {"DARWIN_CHANNEL": f"{self.req_w},{self.rep_r}"}

    def start(self) -> None:
        """Call right after the genome process is spawned: the clock starts and the child's ends close here."""
        self.t0 = time.monotonic()
        for fd in self.child_fds:
            os.close(fd)
        self._thread = threading.Thread(target=self._serve, daemon=True, name="darwin-channel")
        self._thread.start()

    def close(self) -> None:
        """After the process tree is dead: the serving thread sees end-of-file and stops."""
        if self._thread:
            self._thread.join(timeout=5)
        for fd in (self.req_r, self.rep_w):
            try:
                os.close(fd)
            except OSError:
                pass

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def progress(self) -> float:
        done = {"tokens": self.tokens, "requests": self.requests, "s": self.elapsed()}[self.meter.kind]
        return min(1.0, done / self.meter.amount, self.elapsed() / self.meter.deadline_s)

    def overdue(self, grace_s: float) -> str:
        """Why the genome must be stopped now, if it is still running `grace_s` after data stopped."""
        if self.spent_at is None or self.elapsed() <= self.spent_at + grace_s:
            return ""
        return (f"still running {grace_s:g}s after the data channel stopped serving "
                f"(budget spent at {self.spent_at:.1f}s); killed")

    def _spent(self, tokens: int) -> bool:
        m = self.meter
        if self.elapsed() >= m.deadline_s or (m.kind == "s" and self.elapsed() >= m.amount):
            return True
        if m.kind == "tokens":
            return self.tokens + tokens > m.amount
        return m.kind == "requests" and self.requests >= m.amount

    def _serve(self) -> None:
        try:
            while (head := _read_exact(self.req_r, 16)) is not None:
                rows, length = struct.unpack("<qq", head)
                if not (0 < rows and 0 < length <= len(self.train) and rows * length <= MAX_REQUEST_TOKENS):
                    return self._refuse(f"asked for {rows} windows of {length} tokens")
                raw = _read_exact(self.req_r, 8 * rows)
                if raw is None:
                    return
                offsets = np.frombuffer(raw, dtype="<i8")
                if offsets.min() < 0 or offsets.max() > len(self.train) - length:
                    return self._refuse(f"an offset outside 0..{len(self.train) - length}")
                if self._spent(rows * length):
                    self.spent_at = self.spent_at if self.spent_at is not None else round(self.elapsed(), 3)
                    _write_all(self.rep_w, struct.pack("<qd", 0, self.progress()))
                    continue
                batch = self.train[offsets[:, None] + np.arange(length)]
                self.tokens += rows * length
                self.requests += 1
                _write_all(self.rep_w, struct.pack("<qd", rows, self.progress()) + batch.astype("<u2").tobytes())
        except OSError:  # the genome closed its end or died: nothing more to serve
            return

    def _refuse(self, why: str) -> None:
        self.refused = why
        try:
            _write_all(self.rep_w, struct.pack("<qd", -1, self.progress()))
        except OSError:
            pass
