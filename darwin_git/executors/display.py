"""One live view of every slot: which genome runs where, for how long, and how many are done.

Updated only from the driver's thread (the executor loop), so it needs no locking of its own;
lines the driver prints meanwhile scroll above it (rich's Live redirects the console).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, TaskID, TextColumn, TimeElapsedColumn

if TYPE_CHECKING:
    from . import Job, Slot


class SlotDisplay:
    def __init__(self, console: Console | None, slots: list[Slot], total: int):
        self.progress = Progress(TextColumn("{task.description}"), TimeElapsedColumn(),
                                 console=console or Console(quiet=True), transient=True)
        self.total, self.finished = total, 0
        self.width = max(len(s.label) for s in slots)
        self.overall = self.progress.add_task(self._summary())
        self.rows: dict[str, TaskID] = {s.label: self.progress.add_task(self._idle(s), start=False) for s in slots}

    def __enter__(self) -> "SlotDisplay":
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def _summary(self) -> str:
        return f"[bold]evaluated {self.finished}/{self.total}[/]"

    def _idle(self, slot: Slot) -> str:
        return f"  {slot.label:<{self.width}}  [dim]idle[/]"

    def started(self, job: Job, slot: Slot) -> None:
        self.progress.reset(self.rows[slot.label], start=True,
                            description=f"  {slot.label:<{self.width}}  {escape(job.name)} (seed {job.seed})")

    def idle(self, slot: Slot) -> None:
        self.progress.reset(self.rows[slot.label], start=False, description=self._idle(slot))

    def done(self) -> None:
        self.finished += 1
        self.progress.update(self.overall, description=self._summary())
