"""Evaluate one genome commit: staged training in a sandboxed worktree, metered and scored by the harness.

Stages, so a broken genome costs seconds, not a whole budget:
  check  compile every .py and import the model module      (short timeout)  } one process
  smoke  train on two served batches and write a checkpoint (short timeout)  }
  train  train while the data channel serves the budget      (deadline + grace, then killed)
  score  the harness streams val (and test) text to the model and computes bits per byte itself
The record names the stage that failed. Every measured field is the harness's own: tokens served
by the channel, its clock, parameters counted in the checkpoint; what the genome writes to
metrics.json is kept under `reported` and never used.
"""
from __future__ import annotations

import json
import os
import platform
import re
import shutil
import signal
import socket
import stat
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np

from . import compute, git, sandbox, scoring
from .channel import Channel, Meter
from .corpus import Corpus, atomic_write, cache_root, prepare
from .config import TOKEN_CAP_S, EvalSettings, parse_budget
from .errors import DarwinError

GENOME_FILES = ("train.py", "model.py")
STATUSES = ("ok", "crashed", "timeout", "oom", "diverged", "invalid-output", "overrun")
SMOKE_BATCHES = 2
TRUSTED_OPERATOR = re.compile(r"^(offline:\S+|crossover)$")  # code the harness itself writes
REPORT_BYTES = 1 << 20  # metrics.json larger than this is not read
KNOWN_PEAKS = {"H200": 989.5e12, "H100": 989.5e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12,
               "A10": 125e12, "4090": 165e12}  # dense bf16 FLOP/s from vendor sheets
CHECK_FAILED = 86  # the exit status when the check before train.py failed
# The check, then train.py, in one process (one interpreter and torch import fewer per evaluation): compile
# every .py and import the model module, then run train.py as `python train.py` would. The smoke and the train
# stage both run it; they differ in what the data channel serves.
CHECKED_TRAIN = ("import pathlib, runpy, sys, traceback\n"
                 "try:\n"
                 "    for p in sorted(pathlib.Path('.').rglob('*.py')):\n"
                 "        compile(p.read_text(), str(p), 'exec')\n"
                 "    import model\n"
                 "    assert callable(getattr(model, 'load', None)), 'model.py must define load(path)'\n"
                 "except BaseException:\n"
                 "    traceback.print_exc()\n"
                 f"    sys.exit({CHECK_FAILED})\n"
                 "sys.argv = ['train.py']\n"
                 "runpy.run_path('train.py', run_name='__main__')\n")
# The harness's own child ended by a signal: killed from outside (kill -9, a lost node), not the genome's
# verdict. Under bubblewrap that child is outside the genome's PID namespace, where genome code cannot reach
# it; a genome that kills itself shows as bubblewrap's exit code 128 + N instead, and is recorded as a crash.
KILLED = {-signal.SIGKILL, -signal.SIGTERM}
_PEAK_LOCK = threading.Lock()  # parallel slots measure the CPU once, not once each


class WorkerLost(DarwinError):
    """The evaluation's process was killed from outside (kill -9, OOM killer, lost node): not the genome's verdict."""


def budget_meter(settings: EvalSettings) -> Meter:
    """What the train stage's data channel serves, and until when."""
    kind, amount = parse_budget(settings.budget)
    return Meter(kind, amount, amount if kind == "s" else (settings.timeout_s or TOKEN_CAP_S))


@dataclass
class FitnessRecord:
    """One evaluation of one commit. `val_bpb` is the fitness selection uses (lower is better); `test_bpb`,
    when scored, is the report selection never sees. Every number here is measured by the harness."""

    commit: str
    status: str
    stage: str
    test_bpb: float | None = None
    val_bpb: float | None = None
    mfu: float | None = None
    tokens_per_s: float | None = None
    tokens: int | None = None  # training tokens the data channel served
    params: int | None = None  # tensor elements in the checkpoint
    flops_per_token: float | None = None  # 6 x params: the matmul FLOPs of a dense transformer, fwd + bwd
    wall_s: float | None = None  # the train stage, process start to exit, by the harness's clock
    data_stopped_s: float | None = None  # when the channel first refused data (budget spent), if it did
    overrun_s: float | None = None  # seconds the process ran past the deadline (within the grace)
    peak_mem: int | None = None
    cores: int | None = None  # CPU cores the slot granted
    cpu_s: float | None = None  # CPU-seconds the train stage's whole process tree used, by the harness's meter
    compute: str = ""  # how the grant was enforced: cgroup-v2, cgroup-v1, affinity (pinned, escapes metered), none
    seed: int = 0
    budget: str = ""
    device: str = ""
    sandbox: str = ""
    error: str = ""
    eval_s: float = 0.0
    stage_s: dict = field(default_factory=dict)  # seconds per part: worktree, harness, smoke (check in it), train, score, cleanup
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


def _sandbox_mode(settings: EvalSettings, repo: Path, sha: str) -> str:
    """bwrap where it works. Without it, fail closed: only code the harness itself wrote (the repo's root
    commit, offline catalogue mutations and crossovers of those) runs unsandboxed, unless the user
    says `sandbox = "none"`; an LLM's or a request's code is refused."""
    if settings.sandbox not in ("auto", "bwrap", "none"):
        raise DarwinError(f"[evaluation] sandbox = {settings.sandbox!r}: use auto, bwrap or none")
    if settings.sandbox == "none":
        return "none"
    if sandbox.bwrap_works():
        return "bwrap"
    if settings.sandbox == "bwrap":
        raise DarwinError(f"sandbox = 'bwrap' is set but bubblewrap does not work here; {sandbox.HOW_TO}")
    for commit, parents, operator in git.history_trailer(repo, sha, "Darwin-Operator"):
        if parents and not TRUSTED_OPERATOR.match(operator):
            raise DarwinError(f"{sha[:10]} contains {commit[:10]} (operator {operator or 'unknown'}), code the "
                              f"harness did not write, and bubblewrap does not work here: it will not run "
                              f"unsandboxed. {sandbox.HOW_TO}, or set sandbox = \"none\" (or --sandbox none) "
                              "to run it anyway")
    return "none"


def compute_mode(settings: EvalSettings) -> str:
    """How this machine holds a genome to its slot's cores: the best mechanism that works, unless set lower."""
    if settings.compute not in ("auto", "affinity", "none"):
        raise DarwinError(f"[evaluation] compute = {settings.compute!r}: use auto, affinity or none")
    return compute.enforcement() if settings.compute == "auto" else settings.compute


def _device_name(device: str) -> str:
    if device.startswith("cuda"):
        return next(iter(compute.gpu_names()), "cuda")
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
        out = sandbox.call([sys.executable, "-c", probe], timeout_s=120)
        known[device_name] = float(out.stdout.strip() or 1e11) if out else 1e11
        atomic_write(path, json.dumps(known).encode())
    return known[device_name]


def _failure(outcome: sandbox.Outcome, timeout_s: float, memory_mb: int, late: str = "") -> tuple[str, str] | None:
    """Map a finished stage to (status, error) or None when it succeeded; `late` says what running past
    `timeout_s` means for this stage."""
    if outcome.timed_out:
        return "timeout", outcome.why or late or f"killed after {timeout_s:.0f}s wall-clock"
    if outcome.over_memory:
        return "oom", f"memory passed the {memory_mb} MB limit (resident, or tmpfs under a memory cgroup); killed"
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
             slot_env: dict[str, str] | None = None, test: bool = True,
             cores: tuple[int, ...] | None = None, smoke_only: bool = False, smoke: bool = True) -> FitnessRecord:
    """Evaluate `rev` of `repo`; every genome failure becomes a record, never an exception.
    `test=False` scores val alone: generations score test only on the runs that confirm a survivor.
    `cores` are the slot's CPU cores (default: the first `threads`; () for no compute box at all).
    `smoke_only` stops after the check and smoke stages: what an LLM may learn of its patch before it is taken;
    `smoke=False` skips them, for a re-run of a commit that already trained: their verdict is in its note."""
    sha = git.resolve(repo, rev)
    if not is_genome(repo, sha):
        raise DarwinError(f"{rev} is not a genome: its tree lacks {' and '.join(GENOME_FILES)} at the root")
    parse_budget(settings.budget)
    if settings.threads < 1:
        raise DarwinError(f"threads = {settings.threads} in [evaluation]; use 1 or more CPU threads per genome")
    corpus = corpus or prepare(settings.data, settings.tokenizer)
    mode = _sandbox_mode(settings, repo, sha)
    if mode == "none":
        sandbox.guard_harness()
    device_name = _device_name(settings.device)
    cores = compute.slot_cores(0, settings.threads) if cores is None else cores
    mechanism = compute_mode(settings) if cores else "none"
    record = FitnessRecord(
        commit=sha, tree=git.tree_of(repo, sha), status="ok", stage="check", seed=settings.seed,
        budget=settings.budget, device=f"{settings.device}: {device_name}", sandbox=mode, compute=mechanism,
        cores=len(cores) or None,
        env={"python": platform.python_version(), "torch": _version("torch"), "host": socket.gethostname()},
        time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    t0 = time.monotonic()
    clock = _Clock(record.stage_s)
    runs = cache_root() / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"{sha[:10]}-", dir=runs))
    wt, tmp = work / "genome", work / "tmp"
    tmp.mkdir()
    git.worktree_add(repo, wt, sha)
    clock.lap("worktree")
    try:
        _run_stages(record, settings, corpus, wt, tmp, work, mode, device_name, slot_env or {}, test, cores, clock,
                    smoke_only, smoke)
    finally:
        clock.lap("harness")
        git.worktree_remove(repo, wt)
        shutil.rmtree(work, ignore_errors=True)
        clock.lap("cleanup")
    record.eval_s = round(time.monotonic() - t0, 3)
    return record


class _Clock:
    """Seconds per part of an evaluation, summed into `into`: where an evaluation's time goes that is not training."""

    def __init__(self, into: dict[str, float]):
        self.into, self.t = into, time.monotonic()

    def lap(self, part: str) -> None:
        now = time.monotonic()
        self.into[part] = round(self.into.get(part, 0.0) + now - self.t, 3)
        self.t = now


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
                mode: str, device_name: str, slot_env: dict[str, str], test: bool, cores: tuple[int, ...],
                clock: "_Clock", smoke_only: bool = False, smoke: bool = True) -> None:
    memory = s.memory_mb * 2**20
    threads = {"OMP_NUM_THREADS": str(s.threads), "MKL_NUM_THREADS": str(s.threads)}
    data = work / "data"  # what the genome may know of the corpus: its meta, no text
    data.mkdir()
    (data / "meta.json").write_text(json.dumps(corpus.genome_meta()))
    base_env = {"HOME": str(tmp), "TMPDIR": str(tmp), "DARWIN_DATA": str(data), "DARWIN_SEED": str(s.seed),
                "DARWIN_DEVICE": s.device, "DARWIN_PEAK_FLOPS": repr(peak_flops(s, device_name)), **threads, **slot_env}
    python = [sys.executable]
    train_tokens = corpus.tokens("train")
    grant = compute.Grant(cores) if cores else None

    def stage(name: str, argv: list[str], budget: str, meter: Meter | None, timeout: float) -> Path | None:
        """Run one stage; with a meter, the data channel serves it and it must exit within the grace of
        the data stopping (or of `timeout`, the deadline plus the grace)."""
        out = work / name
        out.mkdir()
        channel = Channel(train_tokens, meter) if meter else None
        env = sandbox.clean_env({**base_env, "DARWIN_OUT": str(out), "DARWIN_BUDGET": budget,
                                 **(channel.env() if channel else {})})
        jail = sandbox.Jail(writable=[wt, tmp, out], readable=[data]) if mode == "bwrap" else None
        box = compute.ComputeBox(grant, f"{record.commit[:10]}-{name}", record.compute, memory) if cores else None
        record.stage = name
        clock.lap("harness")
        try:
            outcome = sandbox.run(argv, wt, env, timeout, memory, jail, work / f"{name}-log",
                                  pass_fds=channel.child_fds if channel else (),
                                  started=channel.start if channel else None,
                                  # only training is held to the grace after its data ends: a smoke's steps
                                  # are never scored, so a loaded machine must not turn its slow exit into a verdict
                                  overdue=(lambda: channel.overdue(s.grace(meter.deadline_s))) if name == "train" else None,
                                  box=box)
        finally:
            if channel:
                channel.close()
            clock.lap(name)
        if outcome.returncode in KILLED:
            raise WorkerLost(f"the {name} stage of {record.commit[:10]} was killed from outside "
                             f"(exit {outcome.returncode}); evaluate it again")
        late = (f"still running {s.grace(meter.deadline_s):g}s after the data channel stopped serving at its "
                f"{meter.deadline_s:g}s deadline; killed") if name == "train" else ""
        failed = _failure(outcome, timeout, s.memory_mb, late)
        if failed and outcome.returncode == CHECK_FAILED:
            record.stage = "check"
        if channel and channel.refused and not failed:
            failed = ("crashed", f"the data channel refused a request: {channel.refused}")
        if failed:
            record.status, record.error = failed
            return None
        record.peak_mem = outcome.peak_rss
        if channel and name == "train":
            record.tokens, record.data_stopped_s = channel.tokens, channel.spent_at
            record.wall_s = round(outcome.wall_s, 3)
            record.overrun_s = round(max(0.0, outcome.wall_s - meter.deadline_s), 3)
            record.cpu_s = None if outcome.cpu_s is None else round(outcome.cpu_s, 3)
            if record.cpu_s is not None and compute.overrun(record.cpu_s, outcome.wall_s, grant):
                record.status = "overrun"
                record.error = (f"used {record.cpu_s:.1f} CPU-seconds in {outcome.wall_s:.1f}s on a grant of "
                                f"{len(cores)} core(s) ({record.compute}); more than the slot grants")
                return None
        return out

    smoke_meter = Meter("requests", SMOKE_BATCHES, s.smoke_timeout_s)
    meter = budget_meter(s)
    run = python + ["-c", CHECKED_TRAIN]
    if (s.smoke and smoke) or smoke_only:
        if not stage("smoke", run, f"{SMOKE_BATCHES}batches", smoke_meter, s.smoke_timeout_s) or smoke_only:
            return
    out = stage("train", run, s.budget, meter, meter.deadline_s + s.grace(meter.deadline_s))
    if not out:
        return
    record.reported = _read_report(out / "metrics.json")
    ckpt = out / "ckpt.pt"
    if not _regular_file(ckpt):
        record.status, record.error = "invalid-output", "train.py wrote no ckpt.pt (a regular file) to DARWIN_OUT"
        return
    record.params = checkpoint_params(ckpt) if os.lstat(ckpt).st_size <= memory // 2 else None
    record.tokens_per_s = round(record.tokens / max(record.wall_s, 1e-9), 1)
    if record.params:
        record.flops_per_token = 6.0 * record.params
        record.mfu = record.flops_per_token * record.tokens_per_s / peak_flops(s, device_name)
    record.stage = "score"

    def new_box(split: str) -> compute.ComputeBox | None:
        return compute.ComputeBox(grant, f"{record.commit[:10]}-score-{split}", record.compute, memory) if cores else None

    jail = sandbox.Jail(writable=[tmp], readable=[wt, out]) if mode == "bwrap" else None
    env = sandbox.clean_env({"HOME": str(tmp), "TMPDIR": str(tmp), "PYTHONPATH": str(sandbox.package_dir().parent), **threads,
                             **slot_env})
    splits = {name: corpus.tokens(name) for name in (("val", "test") if test else ("val",))}
    token_bytes = np.array(corpus.meta["token_bytes"], dtype=np.int64)
    clock.lap("harness")
    try:
        scores = scoring.score(wt, ckpt, splits, token_bytes, s.score_tokens, s.score_context, env, jail,
                               s.score_timeout_s, memory, work, new_box)
    except scoring.ScoreError as e:
        err = str(e)
        record.status = "diverged" if "non-finite" in err else "invalid-output"
        record.error = sandbox.redact(err + _stderr_hint(work))
        return
    finally:
        clock.lap("score")
    record.val_bpb = round(scores["val"].bpb, 6)
    record.test_bpb = round(scores["test"].bpb, 6) if "test" in scores else None
    record.scored_tokens = scores["val"].tokens
    record.stage = "done"


def _regular_file(path: Path) -> bool:
    """True for a regular file, never following a link the genome left there."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _read_report(path: Path) -> dict:
    """The genome's metrics.json, if it is a small regular JSON object; kept under `reported`, never trusted."""
    if not _regular_file(path) or os.lstat(path).st_size > REPORT_BYTES:
        return {}
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as f:
            doc = json.loads(f.read(REPORT_BYTES))
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def checkpoint_params(path: Path) -> int | None:
    """Tensor elements in a checkpoint, each shared tensor once (a tied head is one matrix), read with
    torch's weights-only loader; None when it is not a torch file (the genome's format is its own)."""
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # any malformed file: unknown, not fatal, since params only feed the MFU report
        return None
    seen, stack = {}, [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, torch.Tensor):
            seen[(item.untyped_storage().data_ptr(), item.storage_offset(), item.numel())] = item.numel()
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return sum(seen.values()) or None


def _stderr_hint(work: Path) -> str:
    lines = []
    for path in sorted(work.glob("score-*-stderr.txt")):
        lines += sandbox.tail_text(path, 4096).strip().splitlines()
    return f" (model process said: {lines[-1][:300]})" if lines else ""
