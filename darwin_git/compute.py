"""Give every evaluation the same machine share, and measure what it really used.

OMP_NUM_THREADS is advice: a genome can raise its thread count, start busy workers, or re-pin
itself to every core, and so train on more compute than its slot grants. The kernel can make the
grant a limit instead. Each evaluation stage runs in a box:
- cgroup-v2 / cgroup-v1: a cgroup with the slot's cores as its cpuset, a CPU quota of one core per
  granted core (so no number of threads gets more), and CPU accounting of everything ever inside it,
  including daemons that left the process group;
- affinity: sched_setaffinity pinning only; a genome can re-pin itself, so escapes are detected
  (escaped, overrun), not prevented, and CPU time is read from /proc for the tracked process tree;
- none: no pinning (no sched_setaffinity here); metering as for affinity.
A process that can write the cgroup files (root outside bubblewrap, whose read-only / covers them)
can still move itself out; inside the jail it cannot.
"""
from __future__ import annotations

import errno
import functools
import itertools
import os
import re
import signal
import sys
import threading
import time
from dataclasses import dataclass

from . import sandbox

MECHANISMS = ("cgroup-v2", "cgroup-v1", "affinity", "none")
V1 = ("cpuset", "cpu", "cpuacct")  # the cgroup-v1 controllers a box needs: cores, quota, accounting
TICK = os.sysconf("SC_CLK_TCK")
_LOCK = threading.Lock()  # boxes built and closed in parallel threads share their parent groups
_SERIAL = itertools.count()


@dataclass(frozen=True)
class Grant:
    """The CPUs one evaluation owns; it may use len(cores) CPU-seconds per wall second."""

    cores: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.cores:
            raise ValueError("a grant needs at least one core")


def slot_cores(slot_index: int, threads: int) -> tuple[int, ...]:
    """Cores of slot `slot_index` when each slot holds `threads` consecutive cores of the CPUs this
    process may use. Slots wrap around (and share cores) when slots * threads exceeds the machine;
    a slot never lists a core twice, so it holds fewer cores when threads exceeds the machine."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    start = slot_index * threads
    return tuple(dict.fromkeys(cpus[(start + k) % len(cpus)] for k in range(threads)))


@functools.lru_cache(maxsize=1)
def gpu_names() -> tuple[str, ...]:
    """The machine's GPUs as the driver names them, one per device index; none without nvidia-smi."""
    out = sandbox.call(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], timeout_s=20)
    return tuple(line.strip() for line in out.stdout.splitlines() if line.strip()) if out and out.returncode == 0 else ()


def overrun(used_cpu_s: float, wall_s: float, grant: Grant, tolerance: float = 0.10) -> bool:
    """True when a run used more than its grant: len(cores) * wall_s * (1 + tolerance) CPU-seconds,
    plus 0.5 s of absolute slack for starting the interpreter and the sandbox."""
    return used_cpu_s > len(grant.cores) * wall_s * (1 + tolerance) + 0.5


def _mounts() -> dict[str, str]:
    """Mount point of the cgroup2 hierarchy ('cgroup2') and of each cgroup-v1 controller we use."""
    found: dict[str, str] = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mount_fields, fs_fields = line.split(" - ", 1)
            fstype, _source, options = fs_fields.split()[:3]
            mount = mount_fields.split()[4]
            if fstype == "cgroup2":
                found.setdefault("cgroup2", mount)
            elif fstype == "cgroup":
                for controller in set(options.split(",")) & {*V1, "memory"}:
                    found.setdefault(controller, mount)
    return found


def _own_memory_cgroup() -> str:
    """This process's v1 memory cgroup path ("/" at the top): boxes nest under it, inside any container limit."""
    with open("/proc/self/cgroup") as f:
        return next((line.split(":", 2)[2].strip() for line in f if line.split(":")[1] == "memory"), "/")


def _read(group: str, file: str) -> str:
    with open(os.path.join(group, file)) as f:
        return f.read().strip()


def _write(group: str, file: str, value: str) -> None:
    with open(os.path.join(group, file), "w") as f:
        f.write(value)


def _proc(pid: int) -> tuple[str, float, list[int]]:
    """State, CPU seconds (its own plus its reaped children's) and child pids of a process, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()  # the command name may hold spaces and parentheses
    state, seconds = fields[0], sum(int(t) for t in fields[11:15]) / TICK  # utime stime cutime cstime
    children = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            children += [int(c) for c in f.read().split()]
    return state, seconds, children


def _tree(roots: list[int]) -> dict[int, tuple[str, float]]:
    """State and CPU seconds of every live or unreaped process under `roots`."""
    found: dict[int, tuple[str, float]] = {}
    stack = list(roots)
    while stack:
        pid = stack.pop()
        try:
            state, seconds, children = _proc(pid)
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
        found[pid] = state, seconds
        stack += children
    return found


class ComputeBox:
    """One evaluation stage's compute: created in the harness before the child starts, joined by the
    child before exec (so bubblewrap and everything it starts inherit it), read after it ends, removed
    at close. Groups live under darwin-git-<harness pid>/ in each hierarchy."""

    def __init__(self, grant: Grant, name: str, mechanism: str | None = None, memory_bytes: int = 0):
        self.grant, self.memory_bytes = grant, memory_bytes
        self.mechanism = mechanism or enforcement()
        if self.mechanism not in MECHANISMS:
            raise ValueError(f"unknown mechanism {self.mechanism!r}; use one of {MECHANISMS}")
        self._groups: dict[str, str] = {}  # controller -> group directory (one directory for all under v2)
        self._roots: list[int] = []
        self._used = 0.0
        self._oom = False
        self._closed = False
        if self.mechanism.startswith("cgroup"):
            try:
                with _LOCK:
                    self._create(f"{re.sub(r'[^A-Za-z0-9_.-]', '_', name)[:64]}-{next(_SERIAL)}")
            except BaseException:
                self._remove()
                raise
        self._procs = [os.path.join(g, "cgroup.procs").encode() for g in self._dirs()]

    def _dirs(self) -> list[str]:
        return list(dict.fromkeys(self._groups.values()))  # co-mounted v1 controllers share one

    def _create(self, name: str) -> None:
        mounts, v2 = _mounts(), self.mechanism == "cgroup-v2"
        missing = {"cgroup2"} - mounts.keys() if v2 else set(V1) - mounts.keys()
        if missing:
            raise OSError(errno.ENOENT, f"no cgroup hierarchy for {sorted(missing)}")
        for controller in V1:  # recorded before mkdir, so a failed setup is removed the same way
            self._groups[controller] = os.path.join(mounts["cgroup2" if v2 else controller],
                                                    f"darwin-git-{os.getpid()}", name)
        for group in self._dirs():
            parent = os.path.dirname(group)
            if v2:  # controllers reach a group only through every ancestor's subtree_control
                _write(os.path.dirname(parent), "cgroup.subtree_control", "+cpu +cpuset")
            if not os.path.isdir(parent):
                os.mkdir(parent)
                if not v2 and group == self._groups["cpuset"]:  # v1 cpusets start empty; no task may join one
                    for file in ("cpuset.cpus", "cpuset.mems"):
                        _write(parent, file, _read(os.path.dirname(parent), file))
            if v2:
                _write(parent, "cgroup.subtree_control", "+cpu +cpuset")
            os.mkdir(group)
        cores = ",".join(map(str, self.grant.cores))
        if v2:
            _write(self._groups["cpuset"], "cpuset.cpus", cores)  # empty cpuset.mems: the parent's
            _write(self._groups["cpu"], "cpu.max", f"{len(self.grant.cores) * 100_000} 100000")
        else:
            cpuset, cpu = self._groups["cpuset"], self._groups["cpu"]
            _write(cpuset, "cpuset.mems", _read(os.path.dirname(cpuset), "cpuset.mems"))  # before any task joins
            _write(cpuset, "cpuset.cpus", cores)
            period = int(_read(cpu, "cpu.cfs_period_us"))
            _write(cpu, "cpu.cfs_quota_us", str(len(self.grant.cores) * period))
            if self.memory_bytes and "memory" in mounts:
                self._memory_group(mounts["memory"], name)

    def _memory_group(self, mount: str, name: str) -> None:
        """A v1 memory cgroup under the harness's own (so a container's limit still holds above it): its
        limit counts what the RSS watchdog cannot see, tmpfs pages included, and the kernel enforces it."""
        parent = os.path.join(mount + _own_memory_cgroup(), f"darwin-git-{os.getpid()}")
        self._groups["memory"] = os.path.join(parent, name)
        if not os.path.isdir(parent):
            os.mkdir(parent)
        os.mkdir(self._groups["memory"])
        _write(self._groups["memory"], "memory.limit_in_bytes", str(self.memory_bytes))

    def oom_killed(self) -> bool:
        """Whether the kernel killed something in the box for passing its memory limit."""
        group = self._groups.get("memory")
        if not group:
            return False
        try:
            control = dict(line.split() for line in _read(group, "memory.oom_control").splitlines())
        except FileNotFoundError:
            return self._oom
        self._oom = self._oom or int(control.get("oom_kill", 0)) > 0
        return self._oom

    def preexec(self) -> None:
        """Join the box from the forked child, before exec. Only raw os calls on prepared bytes: the
        fork of a threaded harness must not take locks."""
        for path in self._procs:
            fd = os.open(path, os.O_WRONLY)
            try:
                os.write(fd, b"0")  # 0: the writing process
            finally:
                os.close(fd)
        if self.mechanism == "affinity":
            os.sched_setaffinity(0, self.grant.cores)

    def track(self, pid: int) -> None:
        """Meter and kill the process tree under `pid` (affinity and none; a cgroup holds everything anyway)."""
        self._roots.append(pid)

    def cpu_seconds(self) -> float:
        """CPU time used by everything that ever ran in the box, never decreasing. Under a cgroup, its
        accounting. Otherwise the tracked trees from /proc: each live or unreaped process's own time
        plus its reaped children's; misses orphans that were reparented away (double-forked daemons),
        so read it just before the tree is killed and once after, when the last reading stands."""
        if self._closed:
            return self._used
        if self.mechanism == "cgroup-v2":
            stat = dict(line.split() for line in _read(self._groups["cpuacct"], "cpu.stat").splitlines())
            used = int(stat["usage_usec"]) / 1e6
        elif self.mechanism == "cgroup-v1":
            used = int(_read(self._groups["cpuacct"], "cpuacct.usage")) / 1e9
        else:
            used = sum(seconds for _state, seconds in _tree(self._roots).values())
        self._used = max(self._used, used)
        return self._used

    def _pids(self) -> list[int]:
        """Live processes in the box: the cgroup's members, else the tracked trees less their zombies."""
        if not self._groups:
            return [pid for pid, (state, _s) in _tree(self._roots).items() if state != "Z"]
        pids: set[int] = set()
        for group in self._dirs():
            try:
                pids.update(int(p) for p in _read(group, "cgroup.procs").split())
            except FileNotFoundError:
                pass
        return sorted(pids)

    def escaped(self) -> list[int]:
        """Pids of the box's processes with a thread now allowed on a core outside the grant. Under a
        cgroup cpuset the kernel forbids that, so this stays []; under affinity a re-pin shows here."""
        grant, out = set(self.grant.cores), []
        for pid in self._pids():
            try:
                if any(not os.sched_getaffinity(int(tid)) <= grant for tid in os.listdir(f"/proc/{pid}/task")):
                    out.append(pid)
            except OSError:
                continue  # exited meanwhile
        return out

    def kill_all(self) -> None:
        """SIGKILL every process still in the box, until none is left (new children of dying ones too)."""
        for _ in range(200):
            pids = self._pids()
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.01)
        raise OSError(errno.EBUSY, f"processes {self._pids()} survive SIGKILL in compute box")

    def close(self) -> None:
        """Kill what is left, keep the last CPU reading, remove the groups and any empty parents. Idempotent."""
        if self._closed:
            return
        self.kill_all()
        self.cpu_seconds()
        self.oom_killed()
        self._closed = True
        self._remove()

    def _remove(self) -> None:
        for group in self._dirs():
            try:
                os.rmdir(group)
            except FileNotFoundError:
                pass
        with _LOCK:
            for parent in {os.path.dirname(g) for g in self._dirs()}:
                try:
                    os.rmdir(parent)
                except OSError:
                    pass  # still holds another box's group, or already gone


def _works(mechanism: str) -> bool:
    """Whether a box of this kind can be made here and really confines a child to its core."""
    try:
        box = ComputeBox(Grant(slot_cores(0, 1)), "probe", mechanism)
    except OSError:
        return False
    try:
        probe = [sys.executable, "-c", "import os; print(sorted(os.sched_getaffinity(0)))"]
        out = sandbox.call(probe, timeout_s=30, preexec=box.preexec)
        return out is not None and out.stdout.strip() == str(list(box.grant.cores)) and box.cpu_seconds() > 0
    finally:
        box.close()


def remove_stale() -> None:
    """Remove the groups a killed harness left behind (darwin-git-<pid> of a pid that is gone), killing
    anything still inside them: a `kill -9` of the driver must not leave cgroups or genomes running."""
    mounts = _mounts()
    roots = {m for k, m in mounts.items() if k != "memory"}
    if "memory" in mounts:
        roots.add(mounts["memory"] + _own_memory_cgroup())
    for root in roots:
        try:
            names = os.listdir(root)
        except OSError:
            continue
        for name in names:
            pid = name.removeprefix("darwin-git-")
            if not (name.startswith("darwin-git-") and pid.isdigit()) or os.path.exists(f"/proc/{pid}"):
                continue
            parent = os.path.join(root, name)
            groups = [os.path.join(parent, g) for g in os.listdir(parent) if os.path.isdir(os.path.join(parent, g))]
            for group in groups:
                for _ in range(100):  # SIGKILL takes effect when the task next runs: wait for the group to empty
                    tasks = _read(group, "cgroup.procs").split()
                    if not tasks:
                        break
                    for task in tasks:
                        try:
                            os.kill(int(task), signal.SIGKILL)
                        except ProcessLookupError:
                            pass
                    time.sleep(0.01)
                try:
                    os.rmdir(group)
                except OSError:
                    pass
            try:
                os.rmdir(parent)
            except OSError:
                pass


@functools.cache
def enforcement() -> str:
    """Which mechanism works on this machine, probed once: a cgroup with cpuset, CPU quota and accounting
    (v2 first, then v1), else affinity pinning (escapes detected, not prevented), else none. Groups that a
    killed harness left behind are removed first."""
    try:
        remove_stale()
    except OSError:
        pass
    for mechanism in ("cgroup-v2", "cgroup-v1"):
        if _works(mechanism):
            return mechanism
    return "affinity" if hasattr(os, "sched_setaffinity") else "none"
