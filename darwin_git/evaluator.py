"""Evaluate one genome commit: staged training in a sandboxed worktree, scored by the harness.

Stages, so a broken genome costs seconds, not a whole budget:
  check  compile every .py and import the model module      (short timeout)
  smoke  train 2 steps and write a checkpoint                 (short timeout)
  train  train for the full budget                            (budget + grace)
  score  harness computes test/val bits per byte itself       (own timeout)
The record names the stage that failed. Nothing the genome prints or writes becomes its
fitness: `test_bpb` comes from scoring.py on a split that never enters the worktree.
"""
from __future__ import annotations

import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

from . import git, sandbox, scoring
from .corpus import Corpus, _atomic_write, cache_root, prepare
from .errors import DarwinError

GENOME_FILES = ("train.py", "model.py")
STATUSES = ("ok", "crashed", "timeout", "oom", "diverged", "invalid-output")
BUDGET = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|steps|tokens)\s*$")
KNOWN_PEAKS = {"H200": 989.5e12, "H100": 989.5e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12,
               "A10": 125e12, "4090": 165e12}  # dense bf16 FLOP/s from vendor sheets
CHECK = ("import pathlib\n"
         "for p in sorted(pathlib.Path('.').rglob('*.py')):\n"
         "    compile(p.read_text(), str(p), 'exec')\n"
         "import model\n"
         "assert callable(getattr(model, 'load', None)), 'model.py must define load(path)'\n")
# A stage's exit when a signal from outside the harness ended it: raw (-N), or via bubblewrap (128 + N).
KILLED = {code for sig in (signal.SIGKILL, signal.SIGTERM) for code in (-sig, 128 + sig)}
_PEAK_LOCK = threading.Lock()  # parallel slots measure the CPU once, not once each


class WorkerLost(DarwinError):
    """The evaluation's process was killed from outside (kill -9, OOM killer, lost node): not the genome's verdict."""


def parse_budget(text: str) -> tuple[str, float]:
    """'60s' -> ('s', 60.0); also '300steps' and '100000tokens'. One-line error otherwise."""
    m = BUDGET.match(str(text))
    if not m or float(m.group(1)) <= 0:
        raise DarwinError(f"budget {text!r} not understood; use e.g. 60s, 300steps or 100000tokens")
    return m.group(2), float(m.group(1))


@dataclass
class EvalSettings:
    """Everything that decides a fitness number; stored in darwin.toml for an evolution repo."""

    budget: str = "60s"
    device: str = "cpu"
    seed: int = 1337
    data: str = "shakespeare"
    tokenizer: str = "char"
    memory_mb: int = 8192
    timeout_s: float = 0  # 0: derived from the budget
    smoke_timeout_s: float = 120
    score_timeout_s: float = 300
    score_tokens: int = 32768
    peak_flops: float = 0  # 0: look up the GPU, or measure the CPU once
    sandbox: str = "auto"  # auto | bwrap | none
    threads: int = 1  # CPU threads per genome process: fixed, so fitness never depends on how many run at once

    def train_timeout(self) -> float:
        if self.timeout_s:
            return self.timeout_s
        kind, amount = parse_budget(self.budget)
        return amount * 1.5 + 90 if kind == "s" else 900.0


@dataclass
class FitnessRecord:
    """One evaluation of one commit. `test_bpb` is the fitness (lower is better)."""

    commit: str
    status: str
    stage: str
    test_bpb: float | None = None
    val_bpb: float | None = None
    mfu: float | None = None
    tokens_per_s: float | None = None
    params: int | None = None
    wall_s: float | None = None
    peak_mem: int | None = None
    seed: int = 0
    budget: str = ""
    device: str = ""
    sandbox: str = ""
    error: str = ""
    eval_s: float = 0.0
    scored_tokens: int = 0
    reported: dict = field(default_factory=dict)  # the genome's own metrics.json, kept, never trusted
    env: dict = field(default_factory=dict)  # torch/python/host versions
    tree: str = ""
    time: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FitnessRecord":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def _sandbox_mode(settings: EvalSettings) -> str:
    if settings.sandbox == "none":
        return "none"
    if sandbox.bwrap_works():
        return "bwrap"
    if settings.sandbox == "bwrap":
        raise DarwinError("sandbox = 'bwrap' is set but bubblewrap does not work here; "
                          "install it (apt-get install bubblewrap) or set sandbox = 'auto'")
    return "none"


def _device_name(device: str) -> str:
    if device.startswith("cuda"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20).stdout.strip().splitlines()
            return out[0] if out else "cuda"
        except (OSError, subprocess.TimeoutExpired):
            return "cuda"
    try:
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or "cpu"
    return f"{model} x{os.cpu_count()}"


def peak_flops(settings: EvalSettings, device_name: str) -> float:
    """The FLOP/s MFU is measured against: configured, a GPU's datasheet, or a CPU matmul measured once."""
    if settings.peak_flops:
        return settings.peak_flops
    for key, value in KNOWN_PEAKS.items():
        if key in device_name:
            return value
    path = cache_root() / "peak-flops.json"
    with _PEAK_LOCK:
        return _measured_peak(path, settings, device_name)


def _measured_peak(path: Path, settings: EvalSettings, device_name: str) -> float:
    known = json.loads(path.read_text()) if path.exists() else {}
    if device_name not in known:
        probe = ("import time, torch\n"
                 "dt = torch.bfloat16 if torch.cuda.is_available() and '%s' != 'cpu' else torch.float32\n"
                 "dev = 'cuda' if dt == torch.bfloat16 else 'cpu'\n"
                 "a = torch.randn(1024, 1024, dtype=dt, device=dev); b = torch.randn_like(a)\n"
                 "for _ in range(3): a @ b\n"
                 "n, t = 0, time.time()\n"
                 "while time.time() - t < 1.0: a @ b; n += 1\n"
                 "torch.cuda.synchronize() if dev == 'cuda' else None\n"
                 "print(2 * 1024**3 * n / (time.time() - t))\n") % settings.device
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
        known[device_name] = float(out.stdout.strip() or 1e11)
        _atomic_write(path, json.dumps(known).encode())
    return known[device_name]


def _failure(outcome: sandbox.Outcome, timeout_s: float, memory_mb: int) -> tuple[str, str] | None:
    """Map a finished stage to (status, error) or None when it succeeded."""
    if outcome.timed_out:
        return "timeout", f"killed after {timeout_s:.0f}s wall-clock"
    if outcome.over_memory:
        return "oom", f"resident memory passed the {memory_mb} MB limit; killed"
    if outcome.returncode == 0:
        return None
    tail = outcome.tail()
    low = tail.lower()
    if any(s in low for s in ("out of memory", "memoryerror", "cannot allocate memory", "can't allocate memory")):
        return "oom", tail
    if re.search(r"diverg|\bnan\b|\binf\b", low):
        return "diverged", tail
    return "crashed", f"exit code {outcome.returncode}: {tail}"


def is_genome(repo: Path, sha: str) -> bool:
    return set(GENOME_FILES) <= set(git.list_files(repo, sha))


def evaluate(repo: Path, rev: str, settings: EvalSettings, corpus: Corpus | None = None,
             slot_env: dict[str, str] | None = None) -> FitnessRecord:
    """Evaluate `rev` of `repo`; every genome failure becomes a record, never an exception."""
    sha = git.resolve(repo, rev)
    if not is_genome(repo, sha):
        raise DarwinError(f"{rev} is not a genome: its tree lacks {' and '.join(GENOME_FILES)} at the root")
    parse_budget(settings.budget)
    if settings.threads < 1:
        raise DarwinError(f"threads = {settings.threads} in [evaluation]; use 1 or more CPU threads per genome")
    corpus = corpus or prepare(settings.data, settings.tokenizer)
    mode = _sandbox_mode(settings)
    device_name = _device_name(settings.device)
    record = FitnessRecord(
        commit=sha, tree=git.tree_of(repo, sha), status="ok", stage="check", seed=settings.seed,
        budget=settings.budget, device=f"{settings.device}: {device_name}", sandbox=mode,
        env={"python": platform.python_version(), "torch": _version("torch"), "host": socket.gethostname()},
        time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    t0 = time.monotonic()
    runs = cache_root() / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"{sha[:10]}-", dir=runs))
    wt, tmp = work / "genome", work / "tmp"
    tmp.mkdir()
    git.worktree_add(repo, wt, sha)
    try:
        _run_stages(record, settings, corpus, wt, tmp, work, mode, device_name, slot_env or {})
    finally:
        git.worktree_remove(repo, wt)
        shutil.rmtree(work, ignore_errors=True)
    record.eval_s = round(time.monotonic() - t0, 3)
    return record


def remove_stale_runs(repo: Path) -> None:
    """Drop evaluation worktrees a killed run left behind (call only while holding the generation lock)."""
    runs = cache_root() / "runs"
    for path in git.worktree_paths(repo):
        if path.parent.parent == runs:
            git.worktree_remove(repo, path)
            shutil.rmtree(path.parent, ignore_errors=True)


def _version(pkg: str) -> str:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return "missing"


def _run_stages(record: FitnessRecord, s: EvalSettings, corpus: Corpus, wt: Path, tmp: Path, work: Path,
                mode: str, device_name: str, slot_env: dict[str, str]) -> None:
    memory = s.memory_mb * 2**20
    threads = {"OMP_NUM_THREADS": str(s.threads), "MKL_NUM_THREADS": str(s.threads)}
    base_env = {"HOME": str(tmp), "TMPDIR": str(tmp), "DARWIN_DATA": str(corpus.public),
                "DARWIN_SEED": str(s.seed), "DARWIN_DEVICE": s.device,
                "DARWIN_PEAK_FLOPS": repr(peak_flops(s, device_name)), **threads, **slot_env}
    python = [sys.executable]

    def stage(name: str, argv: list[str], budget: str, timeout: float) -> Path | None:
        out = work / name
        out.mkdir()
        env = sandbox.clean_env({**base_env, "DARWIN_OUT": str(out), "DARWIN_BUDGET": budget})
        jail = sandbox.Jail(writable=[wt, tmp, out], readable=[corpus.public], hidden=[cache_root()]) \
            if mode == "bwrap" else None
        record.stage = name
        outcome = sandbox.run(argv, wt, env, timeout, memory, jail, work / f"{name}-log")
        if outcome.returncode in KILLED:
            raise WorkerLost(f"the {name} stage of {record.commit[:10]} was killed from outside "
                             f"(exit {outcome.returncode}); evaluate it again")
        failed = _failure(outcome, timeout, s.memory_mb)
        if failed:
            record.status, record.error = failed
            return None
        record.peak_mem = outcome.peak_rss
        return out

    if not stage("check", python + ["-c", CHECK], s.budget, s.smoke_timeout_s):
        return
    if not stage("smoke", python + ["train.py"], "2steps", s.smoke_timeout_s):
        return
    out = stage("train", python + ["train.py"], s.budget, s.train_timeout())
    if not out:
        return
    try:
        reported = json.loads((out / "metrics.json").read_text())
        assert isinstance(reported, dict)
    except (OSError, ValueError, AssertionError):
        record.status, record.error = "invalid-output", "train.py wrote no valid metrics.json to DARWIN_OUT"
        return
    record.reported = reported
    if not isinstance(reported.get("train_loss"), (int, float)) or not math.isfinite(reported["train_loss"]):
        record.status, record.error = "diverged", f"reported train_loss is {reported.get('train_loss')!r}"
        return
    for key in ("mfu", "tokens_per_s", "params", "wall_s"):
        if isinstance(reported.get(key), (int, float)):
            setattr(record, key, reported[key])
    if not (out / "ckpt.pt").is_file():
        record.status, record.error = "invalid-output", "train.py wrote no ckpt.pt to DARWIN_OUT"
        return
    record.stage = "score"
    jail = sandbox.Jail(writable=[tmp], readable=[corpus.private, wt, out], hidden=[cache_root()]) \
        if mode == "bwrap" else None
    env = sandbox.clean_env({"HOME": str(tmp), "TMPDIR": str(tmp), "PYTHONPATH": _package_root(), **threads,
                             **slot_env})
    try:
        scores, _ = scoring.score(wt, out / "ckpt.pt", corpus.private, ("test", "val"), s.score_tokens,
                                  env, jail, s.score_timeout_s, memory, seed=s.seed)
    except scoring.ScoreError as e:
        err = str(e)
        record.status = "diverged" if "non-finite" in err else "invalid-output"
        record.error = err + _stderr_hint(out / "score-stderr.txt")
        return
    record.test_bpb = round(scores["test"].bpb, 6)
    record.val_bpb = round(scores["val"].bpb, 6)
    record.scored_tokens = scores["test"].tokens
    record.stage = "done"


def _stderr_hint(path: Path) -> str:
    lines = path.read_text(errors="replace").strip().splitlines() if path.exists() else []
    return f" (model process said: {lines[-1]})" if lines else ""


def _package_root() -> str:
    """So the sandboxed runner imports this very darwin_git, wherever it is installed."""
    return str(Path(__file__).resolve().parent.parent)
