"""Run untrusted genome code: own process group, time and memory limits, no secrets, bubblewrap.

Genome code is written by an LLM, so the harness assumes it may hang, leak memory, spawn
children, read files it should not, or phone home. Each run gets:
- a fresh session/process group, killed whole on timeout or at exit (no orphans on a GPU);
- a resident-memory watchdog over the whole process tree (works for CPU and CUDA alike,
  unlike RLIMIT_AS, which breaks CUDA's large virtual mappings);
- an environment built from nothing (an allow-list), so no key or token of the harness's reaches it;
- under bubblewrap, when it works here: no network, its own PID namespace, and a filesystem built
  from an allow-list too: the system's programs and libraries and the interpreter read-only, the
  paths the caller names, and nothing else (no $HOME, no /tmp of the host, no cache, no corpus, no
  other repo, no host sockets).
"""
from __future__ import annotations

import ctypes
import functools
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

PAGE = os.sysconf("SC_PAGE_SIZE")
PR_SET_DUMPABLE = 4
PASSED = ("PATH", "LD_LIBRARY_PATH", "CUDA_HOME", "NVIDIA_DRIVER_CAPABILITIES")  # taken from the parent, if set
SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
HOW_TO = ("install bubblewrap (apt-get install bubblewrap); on Ubuntu 24.04 also allow user namespaces "
          "(sysctl kernel.apparmor_restrict_unprivileged_userns=0)")
TMPFS_BYTES = 256 << 20  # each in-memory folder (/tmp, /dev/shm): memory the RSS watchdog would not see
ERROR_CHARS = 4000  # of a child's stderr, the most that goes into a record
TAIL_BYTES = 64 * 1024  # how much of a child's output the harness ever reads
ETC = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "passwd", "group", "nsswitch.conf")


PIPE = subprocess.PIPE  # for `spawn`'s streams: callers need no subprocess of their own
Process = subprocess.Popen


class Box(Protocol):
    """What a run needs of the cores it is held to (compute.ComputeBox is the one kind): stated here, so
    compute can start its own probes through `call` without a circle of imports."""

    mechanism: str

    def preexec(self) -> None: ...
    def track(self, pid: int) -> None: ...
    def cpu_seconds(self) -> float: ...
    def oom_killed(self) -> bool: ...
    def close(self) -> None: ...


@dataclass
class Finished:
    """What a harness-written command left: its exit status and its output."""

    returncode: int
    stdout: str
    stderr: str


def call(argv: list[str], timeout_s: float, preexec: Callable[[], None] | None = None) -> Finished | None:
    """Run a command the harness wrote (nvidia-smi, a probe, pip) to its end, output captured; None when it
    cannot start or outlives `timeout_s`, so a missing tool means a fallback, never a traceback."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, preexec_fn=preexec)
    except (OSError, subprocess.SubprocessError):
        return None
    return Finished(done.returncode, done.stdout, done.stderr)


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    """A genome's environment, built from nothing: a few system variables, a locale, and `extra`
    (the harness's DARWIN_*, HOME and TMPDIR, thread counts, CUDA_VISIBLE_DEVICES)."""
    env = {k: os.environ[k] for k in PASSED if k in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update(LANG="C.UTF-8", LC_ALL="C.UTF-8", PYTHONDONTWRITEBYTECODE="1", PYTHONUNBUFFERED="1", **extra)
    return env


@functools.lru_cache(maxsize=1)
def bwrap_works() -> bool:
    """True when bubblewrap is installed and allowed to make namespaces on this machine."""
    if not shutil.which("bwrap"):
        return False
    done = call(Jail().wrap([sys.executable, "-c", "pass"], Path("/")), timeout_s=20)
    return done is not None and done.returncode == 0


def package_dir() -> Path:
    """darwin_git itself: the scoring runner imports it inside the jail (its parent goes on PYTHONPATH)."""
    return Path(__file__).resolve().parent


def redact(text: str) -> str:
    """`text` with every secret the harness holds blanked: the values of its environment that no genome
    is given (API keys, tokens, connection strings), so one a genome found cannot reach a note or a prompt."""
    for name, value in os.environ.items():
        if name not in PASSED and len(value) >= 8 and not value.startswith("/") and not value.isdigit():
            text = text.replace(value, f"[{name} redacted]")
    return text


def guard_harness() -> None:
    """Without bubblewrap's PID namespace a genome could read /proc/<harness pid>/environ, where an API key
    lives: a non-dumpable process's /proc files belong to root, out of reach of the user's other processes
    (root itself still reads them). Children are dumpable again after exec, so genomes run as usual."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)


def describe() -> str:
    """One line for `init` and `doctor`: can this machine sandbox genome code, and if not, how to make it."""
    if bwrap_works():
        return "bubblewrap works: genome code runs without network, with its own PID namespace and an allow-listed filesystem"
    return f"bubblewrap does not work here: only harness-written code runs, unsandboxed; to sandbox, {HOW_TO}"


def runtime_paths() -> list[Path]:
    """What a Python child needs to start: the interpreter, its prefixes, its import paths and darwin_git.
    Import paths outside the prefixes (a checkout on sys.path, the current folder) are left out."""
    prefixes = {Path(p).resolve() for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix)}
    found = set(prefixes) | {Path(os.path.realpath(sys.executable)).parent, package_dir()}
    for entry in sys.path:
        p = Path(entry).resolve() if entry else None
        if p and p.is_dir() and (p.name in ("site-packages", "dist-packages") or any(q in p.parents for q in prefixes)):
            found.add(p)
    kept = sorted(p for p in found if p.is_dir())
    return [p for p in kept if not any(q in p.parents for q in kept)]  # a bound folder brings its subfolders


@dataclass
class Jail:
    """What a sandboxed process may see: the system read-only, and the paths named here, nothing else."""

    writable: list[Path] = field(default_factory=list)
    readable: list[Path] = field(default_factory=list)

    def wrap(self, argv: list[str], cwd: Path) -> list[str]:
        cmd = ["bwrap", "--unshare-all", "--die-with-parent", "--dev", "/dev", "--proc", "/proc",
               "--size", str(TMPFS_BYTES), "--tmpfs", "/tmp", "--size", str(TMPFS_BYTES), "--tmpfs", "/dev/shm",
               "--dir", "/run"]
        for p in SYSTEM:
            if os.path.islink(p):
                cmd += ["--symlink", os.readlink(p), p]
            elif os.path.isdir(p):
                cmd += ["--ro-bind", p, p]
        for name in ETC:
            cmd += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
        cmd += ["--ro-bind-try", "/sys/devices/system/cpu", "/sys/devices/system/cpu"]
        for dev in sorted(Path("/dev").glob("nvidia*")):  # a GPU slot's devices (CUDA_VISIBLE_DEVICES picks one)
            cmd += ["--dev-bind", str(dev), str(dev)]
        for p in runtime_paths():
            cmd += ["--ro-bind", str(p), str(p)]
        for p in self.readable:
            cmd += ["--ro-bind", str(p), str(p)]
        for p in self.writable:
            cmd += ["--bind", str(p), str(p)]
            if (p / ".git").exists():  # a worktree's link to its repository: the harness's git reads it later
                cmd += ["--ro-bind", str(p / ".git"), str(p / ".git")]
        return cmd + ["--remount-ro", "/", "--chdir", str(cwd), *argv]


@dataclass
class Outcome:
    returncode: int | None
    stdout: str
    stderr: str
    timed_out: bool
    over_memory: bool
    wall_s: float
    peak_rss: int
    why: str = ""  # why the harness stopped it early, when it says more than "time ran out"
    cpu_s: float | None = None  # CPU-seconds of the whole process tree, when a compute box metered it

    def tail(self, lines: int = 15) -> str:
        """The end of its stderr, capped and redacted: this text goes into notes and on into LLM prompts."""
        return redact("\n".join(self.stderr.strip().splitlines()[-lines:])[-ERROR_CHARS:])


def _tree_rss(root: int) -> int:
    """Resident bytes of `root` and all its descendants, read from /proc."""
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * PAGE
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as f:
                    stack.extend(int(c) for c in f.read().split())
        except (OSError, ValueError):
            continue
    return total


class Watchdog(threading.Thread):
    """Polls a child's process tree; kills the whole group when time or memory runs out, or when
    `overdue` (polled too) names a reason to stop it, e.g. it kept running after its data ended."""

    def __init__(self, proc: Process, timeout_s: float, memory_bytes: int,
                 overdue: Callable[[], str] | None = None, box: Box | None = None):
        super().__init__(daemon=True)
        self.proc, self.timeout_s, self.memory_bytes, self.overdue = proc, timeout_s, memory_bytes, overdue
        self.box = box
        self.t0 = time.monotonic()
        self.timed_out = self.over_memory = False
        self.why = ""
        self.peak = 0
        self.start()

    def run(self) -> None:
        while self.proc.poll() is None:
            self.peak = max(self.peak, _tree_rss(self.proc.pid))
            if self.box:  # without a cgroup, CPU time is read from the live tree: keep the latest reading
                self.box.cpu_seconds()
            if self.peak > self.memory_bytes:
                self.over_memory = True
            elif time.monotonic() - self.t0 > self.timeout_s or (self.overdue and self.overdue()):
                self.timed_out = True
                self.why = (self.overdue and self.overdue()) or ""
            else:
                time.sleep(0.1)
                continue
            kill_group(self.proc)


def spawn(argv: list[str], cwd: Path, env: dict[str, str], jail: Jail | None, box: Box | None = None,
          **popen) -> Process:
    """Start argv in its own session (so its group can be killed whole), inside the jail if any, and inside
    the compute box if any: the child joins it before exec, so everything it starts is held there too."""
    proc = subprocess.Popen(jail.wrap(argv, cwd) if jail else argv, cwd=cwd, env=env, start_new_session=True,
                            preexec_fn=box.preexec if box else None, **popen)
    if box:
        box.track(proc.pid)
    return proc


def tail_text(path: Path, limit: int = TAIL_BYTES) -> str:
    """The last `limit` bytes of a harness log as text: a genome that prints gigabytes costs nothing to read."""
    with open(path, "rb") as f:
        f.seek(max(0, os.fstat(f.fileno()).st_size - limit))
        return f.read(limit).decode(errors="replace")


def run(argv: list[str], cwd: Path, env: dict[str, str], timeout_s: float, memory_bytes: int,
        jail: Jail | None, log_dir: Path, pass_fds: tuple[int, ...] = (),
        started: Callable[[], None] | None = None, overdue: Callable[[], str] | None = None,
        box: Box | None = None) -> Outcome:
    """Run argv to completion or until a limit trips; never raises for the child's misbehaviour.
    Its output goes to `log_dir`, which must be the harness's: a folder the child cannot write.
    With a compute box, everything left in it is killed at the end and its CPU time is the outcome's."""
    log_dir.mkdir(parents=True, exist_ok=True)
    out_path, err_path = log_dir / "stdout.txt", log_dir / "stderr.txt"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = spawn(argv, cwd, env, jail, box, stdout=out, stderr=err, stdin=subprocess.DEVNULL, pass_fds=pass_fds)
        polled = box if box and not box.mechanism.startswith("cgroup") else None  # a cgroup counts by itself
        dog = Watchdog(proc, timeout_s, memory_bytes, overdue, polled)
        if started:
            started()
        try:
            proc.wait()
        finally:
            if box:
                box.cpu_seconds()  # the tree's last reading, before its survivors are killed
            kill_group(proc)
            if box:
                box.close()
        dog.join()
    stopped = dog.timed_out or dog.over_memory or bool(box and box.oom_killed())
    return Outcome(
        returncode=None if stopped else proc.returncode, stdout=tail_text(out_path), stderr=tail_text(err_path),
        timed_out=dog.timed_out, over_memory=dog.over_memory or bool(box and box.oom_killed()),
        wall_s=time.monotonic() - dog.t0, peak_rss=dog.peak, why=dog.why,
        cpu_s=box.cpu_seconds() if box else None,
    )


def kill_group(proc: Process) -> None:
    """SIGKILL the child's whole process group, then reap it: nothing it started outlives it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
