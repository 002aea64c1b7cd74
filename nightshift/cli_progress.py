"""Progress on the terminal for `nightshift run` and `nightshift render`: through the shots, then assembly,
timeline, signing and sealing. A live bar (rich) on a terminal; when output is a file or a pipe, the
engine's own lines (one per shot and per finishing step, with counts) are the progress, and no bar is drawn."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from nightshift.steps import PROCESS_PROGRESS, Progress


class TerminalProgress:
    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream, self.bar, self.tasks = stream, None, {}

    def __call__(self, event: Progress) -> None:
        if self.stream.isatty():
            self._draw(event)

    def _draw(self, event: Progress) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress as Bar, TaskProgressColumn, TextColumn, TimeElapsedColumn

        if self.bar is None:
            self.bar = Bar(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn(),
                           console=Console(file=self.stream), transient=False)
            self.bar.start()
        if event.title not in self.tasks:
            self.tasks[event.title] = self.bar.add_task(event.title, total=event.total)
        detail = f" {event.detail}" if event.detail else ""
        self.bar.update(self.tasks[event.title], completed=event.done, total=event.total,
                        description=f"{event.title}: {event.stage}{detail}"[:70])

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


@contextmanager
def terminal_progress(stream: TextIO = sys.stderr) -> Iterator[TerminalProgress]:
    display = TerminalProgress(stream)
    try:
        with PROCESS_PROGRESS.listening(display):
            yield display
    finally:
        display.close()
