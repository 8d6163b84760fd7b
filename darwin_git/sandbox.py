"""Run untrusted genome code: own process group, time and memory limits, no secrets, bubblewrap.

Genome code is written by an LLM, so the harness assumes it may hang, leak memory, spawn
children, read files it should not, or phone home. Each run gets:
- a fresh session/process group, killed whole on timeout or at exit (no orphans on a GPU);
- a resident-memory watchdog over the whole process tree (works for CPU and CUDA alike,
  unlike RLIMIT_AS, which breaks CUDA's large virtual mappings);
- an environment without API keys, tokens or secrets;
- under bubblewrap, when it works here: no network, a read-only view of the system, the
  harness's data cache hidden, and only the paths the caller names writable.
"""
from __future__ import annotations

import functools
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

SECRET = re.compile(r"(^OPENAI_|^ANTHROPIC_|^AWS_|^AZURE_|^HF_|^GH_|^GITHUB_|^GOOGLE_|"
                    r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?)$)", re.IGNORECASE)
PAGE = os.sysconf("SC_PAGE_SIZE")


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    """The parent's environment minus anything that looks like a credential, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not SECRET.search(k) and not k.startswith("GIT_")}
    env.update(PYTHONDONTWRITEBYTECODE="1", PYTHONUNBUFFERED="1", **extra)
    return env


@functools.lru_cache(maxsize=1)
def bwrap_works() -> bool:
    """True when bubblewrap is installed and allowed to make namespaces on this machine."""
    if not shutil.which("bwrap"):
        return False
    probe = ["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
             "--unshare-net", "--unshare-pid", "--die-with-parent", "true"]
    try:
        return subprocess.run(probe, capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def runtime_paths() -> list[Path]:
    """What a Python child needs to start: the interpreter, its prefixes, import paths, and darwin_git itself."""
    found = {sys.prefix, sys.base_prefix, os.path.dirname(os.path.realpath(sys.executable)), *sys.path,
             str(Path(__file__).resolve().parent.parent)}
    return sorted({Path(p).resolve() for p in found if p and os.path.isdir(p)})


@dataclass
class Jail:
    """What a sandboxed process may see: writable paths, read-only paths re-exposed inside hidden ones."""

    writable: list[Path] = field(default_factory=list)
    readable: list[Path] = field(default_factory=list)
    hidden: list[Path] = field(default_factory=list)

    def wrap(self, argv: list[str], cwd: Path) -> list[str]:
        cmd = ["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp",
               "--unshare-net", "--unshare-pid", "--unshare-ipc", "--die-with-parent"]
        for p in self.hidden:
            cmd += ["--tmpfs", str(p)]
        masked = [Path("/tmp"), *self.hidden]
        for p in runtime_paths():
            if any(p == m or m in p.parents for m in masked):
                cmd += ["--ro-bind", str(p), str(p)]  # e.g. a virtualenv under /tmp: still importable
        for p in self.readable:
            cmd += ["--ro-bind", str(p), str(p)]
        for p in self.writable:
            cmd += ["--bind", str(p), str(p)]
        for p in self.hidden:
            cmd += ["--remount-ro", str(p)]  # a write there fails instead of landing in the empty tmpfs
        return cmd + ["--chdir", str(cwd), *argv]


@dataclass
class Outcome:
    returncode: int | None
    stdout: str
    stderr: str
    timed_out: bool
    over_memory: bool
    wall_s: float
    peak_rss: int

    def tail(self, lines: int = 15) -> str:
        return "\n".join(self.stderr.strip().splitlines()[-lines:])


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
    """Polls a child's process tree; kills the whole group when time or memory runs out."""

    def __init__(self, proc: subprocess.Popen, timeout_s: float, memory_bytes: int):
        super().__init__(daemon=True)
        self.proc, self.timeout_s, self.memory_bytes = proc, timeout_s, memory_bytes
        self.t0 = time.monotonic()
        self.timed_out = self.over_memory = False
        self.peak = 0
        self.start()

    def run(self) -> None:
        while self.proc.poll() is None:
            self.peak = max(self.peak, _tree_rss(self.proc.pid))
            if self.peak > self.memory_bytes:
                self.over_memory = True
            elif time.monotonic() - self.t0 > self.timeout_s:
                self.timed_out = True
            else:
                time.sleep(0.1)
                continue
            kill_group(self.proc)


def spawn(argv: list[str], cwd: Path, env: dict[str, str], jail: Jail | None, **popen) -> subprocess.Popen:
    """Start argv in its own session (so its group can be killed whole), inside the jail if any."""
    return subprocess.Popen(jail.wrap(argv, cwd) if jail else argv, cwd=cwd, env=env,
                            start_new_session=True, **popen)


def run(argv: list[str], cwd: Path, env: dict[str, str], timeout_s: float, memory_bytes: int,
        jail: Jail | None, log_dir: Path) -> Outcome:
    """Run argv to completion or until a limit trips; never raises for the child's misbehaviour."""
    log_dir.mkdir(parents=True, exist_ok=True)
    out_path, err_path = log_dir / "stdout.txt", log_dir / "stderr.txt"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = spawn(argv, cwd, env, jail, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        dog = Watchdog(proc, timeout_s, memory_bytes)
        try:
            proc.wait()
        finally:
            kill_group(proc)
        dog.join()
    stopped = dog.timed_out or dog.over_memory
    return Outcome(
        returncode=None if stopped else proc.returncode,
        stdout=out_path.read_text(errors="replace"), stderr=err_path.read_text(errors="replace"),
        timed_out=dog.timed_out, over_memory=dog.over_memory,
        wall_s=time.monotonic() - dog.t0, peak_rss=dog.peak,
    )


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the child's whole process group, then reap it: nothing it started outlives it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
