"""Evaluations on this machine: one driver thread per busy slot, each evaluation its own process tree.

Threads suffice because the work happens in the sandboxed genome processes; the driver's share
(worktree add/remove, the scorer's arithmetic) is small, and git.py already serializes worktree
changes. A CUDA slot sees exactly one GPU (CUDA_VISIBLE_DEVICES); `per_device` slots per GPU
pack genomes too small to fill one. CPU threads per genome come from [evaluation] threads,
never from the slot count, so a fitness does not depend on how many evaluations share the box.
"""
from __future__ import annotations

import itertools
import os
import queue
import signal
import threading
import time
from pathlib import Path
from typing import Any

from ..compute import gpu_names, slot_cores
from ..corpus import Corpus, cache_root
from ..errors import DarwinError
from ..config import EvalSettings, ExecutorSettings
from ..evaluator import evaluate
from . import Executor, Job, Slot

CANCEL_WAIT_S = 60.0


def visible_devices() -> list[str]:
    """The GPUs this process may use: CUDA_VISIBLE_DEVICES when set (CUDA's own rules), else every GPU the driver lists."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        # CUDA stops at the first invalid entry; "-1" (or "") is the usual way to hide every GPU.
        entries = (d.strip() for d in listed.split(","))
        return list(itertools.takewhile(lambda d: d and not d.startswith("-"), entries))
    return [str(i) for i in range(len(gpu_names()))]


def _kill_stages() -> None:
    """SIGKILL every genome process group this driver started: children leading their own session in a run dir."""
    runs, me = cache_root() / "runs", str(os.getpid())
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            ppid = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]
            if ppid == me and Path(os.readlink(f"/proc/{pid}/cwd")).is_relative_to(runs):
                os.killpg(int(pid), signal.SIGKILL)
        except (OSError, IndexError):
            continue


class LocalExecutor(Executor):
    def __init__(self, slots: list[Slot]):
        super().__init__(slots)
        self.results: queue.Queue[tuple[threading.Thread, dict | BaseException]] = queue.Queue()

    @classmethod
    def for_device(cls, settings: ExecutorSettings, device: str, threads: int = 1) -> "LocalExecutor":
        """CPU: `slots` slots (default: as many as the cores hold at `threads` each, so no core idles).
        CUDA: `per_device` slots on each visible GPU (or on GPU N for cuda:N)."""
        if not device.startswith("cuda"):
            n = settings.slots or max(1, (os.cpu_count() or 1) // threads)
            return cls([Slot(f"cpu{i}", cores=slot_cores(i, threads)) for i in range(n)])
        devices = visible_devices()
        if device.startswith("cuda:"):
            index = int(device[5:]) if device[5:].isdigit() else -1
            if not 0 <= index < len(devices):
                raise DarwinError(f"device {device!r}: only {len(devices)} CUDA device(s) visible here")
            devices = [devices[index]]
        if not devices:
            raise DarwinError("device = cuda but no CUDA device is visible (CUDA_VISIBLE_DEVICES, nvidia-smi -L); "
                              "use --device cpu or check the driver")
        n = settings.slots or len(devices) * settings.per_device
        return cls([Slot(f"gpu{devices[i % len(devices)]}.{i // len(devices)}",
                         {"CUDA_VISIBLE_DEVICES": devices[i % len(devices)]}, slot_cores(i, threads)) for i in range(n)])

    def _start(self, repo: Path, job: Job, settings: EvalSettings, corpus: Corpus, slot: Slot) -> threading.Thread:
        def work() -> None:
            try:
                outcome: dict | BaseException = evaluate(repo, job.sha, settings, corpus, slot.env, job.test, slot.cores,
                                                               smoke=job.smoke).to_dict()
            except BaseException as e:  # whatever ended the slot's work, the executor decides what it means
                outcome = e
            self.results.put((threading.current_thread(), outcome))

        thread = threading.Thread(target=work, name=f"darwin-{slot.label}", daemon=True)
        thread.start()
        return thread

    def _wait(self, handles: list[Any]) -> tuple[Any, dict | BaseException]:
        while True:
            thread, outcome = self.results.get()
            if thread in handles:  # not a straggler of an earlier, cancelled run
                return thread, outcome

    def _cancel(self, handles: list[Any]) -> None:
        deadline = time.monotonic() + CANCEL_WAIT_S
        while any(t.is_alive() for t in handles) and time.monotonic() < deadline:
            _kill_stages()  # again each round: a slot may have started its next stage meanwhile
            for thread in handles:
                thread.join(0.2)
