"""Parallel evaluation: 2 local slots and a local Ray instance give the records 1 slot gives; dead workers.

Real genomes, real kills: a thread plays the OOM killer (or an operator's kill -9) on the
evaluation's process group, or on the Ray worker running it.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
import ray  # imported, never skipped: a CI without Ray fails here

from darwin_git import evaluator
from darwin_git.errors import DarwinError
from darwin_git.config import ExecutorSettings
from darwin_git.executors import Job, executor_for, local
from darwin_git.executors.local import LocalExecutor, visible_devices

from .conftest import GENOME, _test_env, git, tiny_settings

# Fields that may differ between backends: timings, the machine and how its cores were held (Ray holds none),
# and the genome's own timing report.
TIMING = {"eval_s", "stage_s", "wall_s", "tokens_per_s", "mfu", "peak_mem", "time", "device", "env", "data_stopped_s", "overrun_s",
          "cpu_s", "cores", "compute", "train_s"}
# On top of the template: three more genomes, then a fifth commit whose evaluations are all killed.
EDITS = [("learning_rate = 2e-3", "learning_rate = 3e-3"), ("n_head = 4", "n_head = 2"),
         ("beta2 = 0.95", "beta2 = 0.99"), ("grad_clip = 1.0", "grad_clip = 0.5")]


def comparable(record: dict) -> dict:
    out = {k: v for k, v in record.items() if k not in TIMING}
    out["reported"] = {k: v for k, v in record["reported"].items() if k not in TIMING}
    return out


@pytest.fixture(scope="module")
def env(cache):
    with pytest.MonkeyPatch.context() as mp:
        _test_env(mp, cache)
        yield


@pytest.fixture(scope="module")
def repo(tmp_path_factory, env) -> Path:
    """Four distinct small genomes (the template, then one knob changed per commit) and a fifth, doomed one."""
    repo = tmp_path_factory.mktemp("executors") / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    for f in ("model.py", "train.py"):
        (repo / f).write_text((GENOME / f).read_text())
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "template")
    for old, new in EDITS:
        text = (repo / "train.py").read_text()
        assert old in text
        (repo / "train.py").write_text(text.replace(old, new))
        git(repo, "commit", "-qam", new)
    return repo


@pytest.fixture(scope="module")
def shas(repo) -> list[str]:
    return git(repo, "rev-list", "--reverse", "HEAD").split()


@pytest.fixture(scope="module")
def settings(corpus_file):
    return tiny_settings(corpus_file, "20800tokens")


@pytest.fixture(scope="module")
def reference(repo, shas, settings, corpus, env) -> dict[str, dict]:
    """The four genomes' records from one local slot: what every other layout must reproduce."""
    jobs = [Job(f"g{i}", sha, 7) for i, sha in enumerate(shas[:4])]
    runs = list(executor_for(ExecutorSettings(slots=1), settings).run(repo, jobs, settings, corpus))
    assert [job for job, _ in runs] == jobs  # one slot: finished in submission order
    return {job.sha: record for job, record in runs}


class Killer(threading.Thread):
    """Plays kill -9 from outside: `times[sha]` evaluations of that commit are killed as soon as they start.

    An evaluation's stage is a session leader whose cwd is a worktree under runs/<sha10>-*/; `victim`
    maps its pid to the pid to kill (its own group, or the Ray worker above it).
    """

    def __init__(self, runs: Path, times: dict[str, int], ray_worker: bool = False):
        super().__init__(daemon=True)
        self.runs, self.left, self.ray_worker = runs, dict(times), ray_worker
        self.kills = {sha: 0 for sha in times}
        self.halt = threading.Event()
        self.start()

    def run(self) -> None:
        seen: set[int] = set()
        while not self.halt.is_set() and any(self.left.values()):
            for pid, ppid, cwd in self._stages():
                sha = next((s for s in self.left if cwd.parent.name.startswith(s[:10])), None)
                if pid in seen or not sha or not self.left[sha]:
                    continue
                seen.add(pid)
                try:
                    os.kill(ppid, signal.SIGKILL) if self.ray_worker else os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    continue
                self.left[sha] -= 1
                self.kills[sha] += 1
            time.sleep(0.05)

    def _stages(self):
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
            except OSError:
                continue
            if int(fields[3]) == int(pid) and cwd.is_relative_to(self.runs) and cwd.name == "genome":
                yield int(pid), int(fields[1]), cwd

    def stop(self) -> dict[str, int]:
        self.halt.set()
        self.join()
        return self.kills


def check_against_reference(repo, shas, runs, reference, killed_once: str) -> None:
    records = {job.sha: record for job, record in runs}
    assert len(runs) == 5 and set(records) == set(shas)
    for sha in shas[:4]:
        assert records[sha]["status"] == "ok", records[sha]["error"]
        assert comparable(records[sha]) == comparable(reference[sha]), sha
    assert records[killed_once]["val_bpb"] == reference[killed_once]["val_bpb"]  # the retry was a full run
    doomed = records[shas[4]]
    assert (doomed["status"], doomed["stage"], doomed["val_bpb"]) == ("crashed", "worker", None)
    assert "the worker died twice" in doomed["error"]
    # Executors only compute: no note and no ref was written, no worktree left behind.
    assert git(repo, "for-each-ref", "refs/notes") == ""
    assert git(repo, "worktree", "list").count("\n") == 1


def test_two_local_slots_give_one_slot_records_and_a_killed_evaluation_is_retried_once(
        repo, shas, settings, corpus, reference, cache):
    executor = executor_for(ExecutorSettings(slots=2), settings)
    assert [s.label for s in executor.slots] == ["cpu0", "cpu1"]
    jobs = [Job(f"g{i}", sha, 7) for i, sha in enumerate(shas)]
    killer = Killer(cache / "runs", {shas[1]: 1, shas[4]: 2})
    t0 = time.monotonic()
    runs = list(executor.run(repo, jobs, settings, corpus))
    wall = time.monotonic() - t0
    assert killer.stop() == {shas[1]: 1, shas[4]: 2}
    check_against_reference(repo, shas, runs, reference, shas[1])
    busy = sum(r["eval_s"] for _, r in runs)
    assert busy > wall  # evaluations overlapped


@pytest.fixture(scope="module")
def local_ray(env):
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_gives_the_same_records_and_a_killed_worker_is_retried_once(
        repo, shas, settings, corpus, reference, cache, local_ray):
    executor = executor_for(ExecutorSettings(kind="ray"), settings)
    assert len(executor.slots) == 2  # 2 CPUs, 1 thread per genome
    jobs = [Job(f"g{i}", sha, 7) for i, sha in enumerate(shas)]
    killer = Killer(cache / "runs", {shas[2]: 1, shas[4]: 2}, ray_worker=True)
    runs = list(executor.run(repo, jobs, settings, corpus))
    assert killer.stop() == {shas[2]: 1, shas[4]: 2}
    check_against_reference(repo, shas, runs, reference, shas[2])


def test_an_exception_in_a_slot_is_retried_then_recorded_and_user_errors_stop_the_run(
        repo, shas, settings, corpus, monkeypatch):
    calls: dict[str, int] = {}

    def flaky(repo, sha, settings, corpus, slot_env, test=True, cores=None, smoke=True):
        calls[sha] = calls.get(sha, 0) + 1
        if sha == shas[0] or calls[sha] == 1:
            raise OSError(f"slot lost its disk ({calls[sha]})")
        return evaluator.FitnessRecord(commit=sha, status="ok", stage="done", seed=settings.seed, val_bpb=1.0)

    monkeypatch.setattr(local, "evaluate", flaky)
    runs = dict((job.sha, record) for job, record in LocalExecutor.for_device(ExecutorSettings(slots=2), "cpu").run(
        repo, [Job("a", shas[0], 1), Job("b", shas[1], 1)], settings, corpus))
    assert calls == {shas[0]: 2, shas[1]: 2}
    assert runs[shas[1]]["status"] == "ok"
    assert runs[shas[0]]["status"] == "crashed" and "died twice: slot lost its disk (2)" in runs[shas[0]]["error"]

    def misconfigured(*args, **kwargs):
        raise DarwinError("sandbox = 'bwrap' is set but bubblewrap does not work here")

    monkeypatch.setattr(local, "evaluate", misconfigured)
    with pytest.raises(DarwinError, match="bubblewrap"):
        list(LocalExecutor([local.Slot("cpu0")]).run(repo, [Job("a", shas[0], 1)], settings, corpus))


def test_gpu_slots_follow_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert visible_devices() == ["2", "3"]
    slots = LocalExecutor.for_device(ExecutorSettings(per_device=2), "cuda").slots
    assert [(s.label, s.env["CUDA_VISIBLE_DEVICES"]) for s in slots] == [
        ("gpu2.0", "2"), ("gpu3.0", "3"), ("gpu2.1", "2"), ("gpu3.1", "3")]
    assert [s.env for s in LocalExecutor.for_device(ExecutorSettings(), "cuda:1").slots] == [
        {"CUDA_VISIBLE_DEVICES": "3"}]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    with pytest.raises(DarwinError, match="no CUDA device is visible"):
        LocalExecutor.for_device(ExecutorSettings(), "cuda")


def test_missing_ray_is_a_one_line_error(monkeypatch, settings):
    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.delitem(sys.modules, "darwin_git.executors.ray", raising=False)
    with pytest.raises(DarwinError, match=r"pip install 'darwin-git\[ray\]'"):
        executor_for(ExecutorSettings(kind="ray"), settings)
