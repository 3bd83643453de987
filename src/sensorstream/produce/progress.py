"""The live progress line: sent, acknowledged, failed and the current rate."""

from __future__ import annotations

import time
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn


class ProgressLine:
    """A rich progress line on stderr; :meth:`update` is cheap to call per message."""

    def __init__(self, total: int | None, enabled: bool = True, console: Console | None = None) -> None:
        self.enabled = enabled
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn(
                "sent {task.completed:,.0f}  acked [green]{task.fields[acked]:,}[/]  "
                "failed [red]{task.fields[failed]:,}[/]  {task.fields[rate]:,.0f} msg/s"
            ),
            TimeElapsedColumn(),
            console=console or Console(stderr=True),
            disable=not enabled,
        )
        self._task = self._progress.add_task("producing", total=total, acked=0, failed=0, rate=0.0)
        self._start = time.monotonic()
        self._next = 0.0

    def update(self, sent: int, acked: int, failed: int, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now < self._next:
            return
        self._next = now + 0.2  # refreshing more often only costs throughput
        rate = sent / (now - self._start) if now > self._start else 0.0
        self._progress.update(self._task, completed=sent, acked=acked, failed=failed, rate=rate)

    def __enter__(self) -> ProgressLine:
        self._progress.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._progress.stop()
