"""Compute boxes with real processes: the grant holds against threads, workers, re-pinning and daemons."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from darwin_git import compute, sandbox
from darwin_git.compute import ComputeBox, Grant

CPUS = sorted(os.sched_getaffinity(0))
CGROUP = compute.enforcement().startswith("cgroup")
BUSY = """import os, sys, time
end = time.monotonic() + float(sys.argv[1])
pid = os.fork()  # two busy processes, whatever the slot's OMP_NUM_THREADS says
while time.monotonic() < end: pass
if pid: os.waitpid(pid, 0)
"""


def need_cgroup() -> None:
    """CI machines have cgroups, so there a missing one is a failure; elsewhere it is a skip."""
    if not CGROUP:
        why = f"no usable cgroup here (enforcement() = {compute.enforcement()!r})"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)


def start(box: ComputeBox, program: str, *args: str, wrap: tuple[str, ...] = ()) -> subprocess.Popen:
    """Run a Python program in the box the way the harness will: joined before exec, in its own session."""
    proc = subprocess.Popen([*wrap, sys.executable, "-c", program, *args], preexec_fn=box.preexec,
                            start_new_session=True, stdout=subprocess.PIPE, text=True)
    box.track(proc.pid)
    return proc


def used_per_wall(cores: tuple[int, ...], seconds: float) -> tuple[float, float]:
    """CPU-seconds per wall second that BUSY got in a box of `cores`, and the wall time."""
    box = ComputeBox(Grant(cores), "busy")
    try:
        t0 = time.monotonic()
        start(box, BUSY, str(seconds)).wait()
        wall = time.monotonic() - t0
        return box.cpu_seconds() / wall, wall
    finally:
        box.close()


def test_two_busy_processes_get_one_granted_core_and_two_get_more():
    need_cgroup()
    per_wall, wall = used_per_wall(tuple(CPUS[:1]), 1.5)
    assert per_wall <= 1.1
    assert not compute.overrun(per_wall * wall, wall, Grant(tuple(CPUS[:1])))
    if len(CPUS) >= 2:
        per_wall, _ = used_per_wall(tuple(CPUS[:2]), 1.0)
        assert per_wall > 1.3  # the same program given two cores uses them: the meter is real


@pytest.mark.skipif(len(CPUS) < 2, reason="needs two CPUs to re-pin onto")
@pytest.mark.parametrize("mechanism", ["cgroup", "affinity"])
def test_re_pinning_to_all_cores_is_prevented_by_a_cpuset_or_reported(mechanism):
    if mechanism == "cgroup":
        need_cgroup()
    box = ComputeBox(Grant((CPUS[0],)), "pin", None if mechanism == "cgroup" else "affinity")
    try:
        proc = start(box, f"import os, time; os.sched_setaffinity(0, {CPUS}); "
                          "print(sorted(os.sched_getaffinity(0)), flush=True); time.sleep(30)")
        after = proc.stdout.readline().strip()
        if mechanism == "cgroup":
            assert after == str([CPUS[0]])
            assert box.escaped() == []
        else:
            assert after == str(CPUS)
            assert box.escaped() == [proc.pid]
    finally:
        box.close()
    proc.wait()


def is_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_double_forked_daemon_dies_at_close_and_no_group_remains():
    need_cgroup()
    box = ComputeBox(Grant((CPUS[0],)), "deadbeef/train: ../..")
    daemon = ("import os, time\n"
              "if os.fork() == 0:\n"
              "    os.setsid()\n"
              "    if os.fork() == 0:\n"
              "        print(os.getpid(), flush=True); time.sleep(60)\n"
              "    os._exit(0)\n"
              "os.wait()\n")
    proc = start(box, daemon)
    pid = int(proc.stdout.readline())
    assert proc.wait() == 0 and is_alive(pid)  # it outlived its parent and left the process group
    groups = box._dirs()
    box.close()
    box.close()  # idempotent
    assert not is_alive(pid)
    assert not [d for g in groups for d in (g, os.path.dirname(g)) if os.path.exists(d)]


def test_affinity_mode_counts_a_busy_grandchild_live_and_after_it_is_reaped():
    tree = ("import os, time\n"
            "def busy(until):\n"
            "    while time.process_time() < until: pass\n"
            "if os.fork() == 0:\n"
            "    if os.fork() == 0:\n"
            "        busy(0.5); print('half', flush=True); busy(1.0); os._exit(0)\n"
            "    os.wait(); os._exit(0)\n"
            "os.wait(); print('reaped', flush=True); time.sleep(30)\n")
    box = ComputeBox(Grant((CPUS[0],)), "tree", "affinity")
    try:
        proc = start(box, tree)
        assert proc.stdout.readline().strip() == "half"
        assert box.cpu_seconds() >= 0.5  # read from the live grandchild's /proc/<pid>/stat
        assert proc.stdout.readline().strip() == "reaped"
        assert 1.0 <= box.cpu_seconds() < 1.5  # now in the root's cutime, via its reaped child
    finally:
        box.close()
    proc.wait()
    assert box.cpu_seconds() >= 1.0


@pytest.mark.skipif(not sandbox.bwrap_works(), reason="bubblewrap unavailable here")
def test_bubblewrap_started_in_a_box_stays_on_its_cores_and_is_counted():
    need_cgroup()
    box = ComputeBox(Grant((CPUS[0],)), "bwrap")
    try:
        jail = ("bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--unshare-pid",
                "--die-with-parent")
        proc = start(box, "import os, time; print(sorted(os.sched_getaffinity(0)))\n"
                          "while time.process_time() < 0.3: pass", wrap=jail)
        assert proc.stdout.readline().strip() == str([CPUS[0]])
        proc.wait()
        assert box.cpu_seconds() >= 0.3
    finally:
        box.close()


def test_slot_cores_are_consecutive_and_wrap():
    n = len(CPUS)
    assert compute.slot_cores(0, 1) == (CPUS[0],)
    assert compute.slot_cores(1, 1) == (CPUS[1 % n],)
    assert compute.slot_cores(n, 1) == (CPUS[0],)  # one slot per core, then around again
    assert compute.slot_cores(1, n) == tuple(CPUS)
    assert compute.slot_cores(0, n + 1) == tuple(CPUS)  # never a core twice


def test_overrun_allows_the_grant_plus_tolerance_and_half_a_second():
    one, two = Grant((0,)), Grant((0, 1))
    assert not compute.overrun(11.5, 10, one) and compute.overrun(11.6, 10, one)
    assert not compute.overrun(22.5, 10, two) and compute.overrun(22.6, 10, two)
    assert compute.overrun(10.6, 10, one, tolerance=0.0)


def test_groups_a_killed_harness_left_are_removed_with_what_runs_in_them():
    need_cgroup()
    box = compute.ComputeBox(compute.Grant(CPUS[:1]), "left-behind")
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], preexec_fn=box.preexec)
    dead = f"darwin-git-{2**22 + 12345}"  # a pid beyond pid_max: its harness is surely gone
    parents = {os.path.dirname(g) for g in box._dirs()}
    for parent in parents:
        os.rename(parent, os.path.join(os.path.dirname(parent), dead))
    compute.remove_stale()
    assert child.wait(timeout=10) == -9
    assert not any(os.path.exists(os.path.join(os.path.dirname(p), dead)) for p in parents)
