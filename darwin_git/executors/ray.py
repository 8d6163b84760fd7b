"""Evaluations on a Ray cluster: one task per evaluation, the commit shipped as a git bundle.

Workers never touch the driver's repo: each task gets the commit and its history as bundle
bytes (a few KB), unpacks them into a scratch bare repo, runs the same `evaluate` there and
returns the record; the driver writes the note. So a worker needs no shared filesystem and no
git remote, only darwin-git installed and the corpus (`[evaluation] data`: the Shakespeare
default is fetched and cached on each node; a file path must exist on every node).
Ray's own task retries are off (max_retries=0): the executor retries a dead worker once,
the same policy as the local backend.
"""
from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import ray

from .. import git
from ..corpus import Corpus, prepare
from ..errors import DarwinError
from ..config import EvalSettings, ExecutorSettings
from ..evaluator import evaluate
from . import Executor, Job, Slot


def evaluate_bundle(bundle: bytes, sha: str, settings: EvalSettings, test: bool = True, smoke: bool = True) -> dict:
    """Runs on a Ray worker: rebuild `sha` from its bundle in a scratch repo and evaluate it there."""
    with tempfile.TemporaryDirectory(prefix="darwin-ray-") as tmp:
        repo = Path(tmp) / "repo.git"
        git.init(repo, bare=True)
        git.unbundle(repo, bundle)
        # No compute box: Ray shares a node's cores among its tasks without saying which (README, "Fair compute").
        return evaluate(repo, sha, settings, prepare(settings.data, settings.tokenizer), test=test, cores=(),
                        smoke=smoke).to_dict()


class RayExecutor(Executor):
    def __init__(self, settings: ExecutorSettings, evaluation: EvalSettings):
        if not ray.is_initialized():
            try:
                if settings.address:
                    ray.init(address=settings.address, log_to_driver=False, logging_level=logging.WARNING)
                else:
                    cpus = settings.slots * evaluation.threads if settings.slots else os.cpu_count()
                    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False,
                             logging_level=logging.WARNING)
            except ImportError:  # ray:// addresses need Ray's client (grpcio), which plain `ray` lacks
                raise DarwinError(f"joining {settings.address} needs Ray's client: "
                                  "pip install 'darwin-git[ray]'") from None
            except (ConnectionError, RuntimeError, ValueError) as e:
                where = settings.address or "a local instance"
                raise DarwinError(f"could not start Ray ({where}): {str(e).splitlines()[0]}") from None
        gpu = evaluation.device.startswith("cuda")
        self.resources = {"num_cpus": evaluation.threads, "num_gpus": 1 / settings.per_device if gpu else 0}
        cluster = ray.cluster_resources()
        fits = int(cluster.get("GPU", 0) * settings.per_device if gpu else cluster.get("CPU", 0) // evaluation.threads)
        if not (settings.slots or fits):
            raise DarwinError(f"the Ray cluster has no room for one evaluation ({evaluation.threads} CPU"
                              f"{' and a GPU' if gpu else ''}); add nodes or lower [evaluation] threads")
        super().__init__([Slot(f"ray{i}") for i in range(settings.slots or fits)])
        self.task = ray.remote(max_retries=0)(evaluate_bundle)
        self.bundles: dict[str, ray.ObjectRef] = {}

    def _start(self, repo: Path, job: Job, settings: EvalSettings, corpus: Corpus, slot: Slot) -> ray.ObjectRef:
        if job.sha not in self.bundles:  # re-evaluations on fresh seeds ship the same bundle once
            self.bundles[job.sha] = ray.put(git.bundle(repo, job.sha))
        return self.task.options(**self.resources).remote(self.bundles[job.sha], job.sha, settings,
                                                          job.test, job.smoke)

    def _wait(self, handles: list[Any]) -> tuple[Any, dict | BaseException]:
        [ref], _ = ray.wait(handles, num_returns=1)
        try:
            return ref, ray.get(ref)
        except ray.exceptions.RayTaskError as e:  # raised inside the task: hand on the task's own exception
            return ref, e.cause if isinstance(e.cause, BaseException) else e
        except ray.exceptions.RayError as e:  # the worker, its node or the object is gone
            return ref, e

    def _cancel(self, handles: list[Any]) -> None:
        for ref in handles:
            ray.cancel(ref, force=True)
