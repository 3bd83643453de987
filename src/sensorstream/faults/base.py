"""What every scenario takes (:class:`FaultOptions`) and returns (:class:`ScenarioResult`)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sensorstream.config import Settings
from sensorstream.faults.events import Verdict
from sensorstream.faults.reader import ReaderStats


@dataclass(frozen=True)
class FaultOptions:
    settings: Settings
    quick: bool = False  # the bounded CI form
    events: int | None = None  # overrides the scenario's default size
    workdir: Path | None = None  # temp dirs go here (default: the system temp dir)
    bootstrap: str | None = None  # reuse this broker where a scenario does not break its broker
    seed: int = 0
    keep: bool = False  # keep temp dirs (logs, stores) even when the scenario passed

    def size(self, full: int, quick: int) -> int:
        return self.events or (quick if self.quick else full)


@dataclass
class ScenarioResult:
    name: str
    events: int = 0  # messages sent
    faults: str = ""  # what was done to the pipeline, in words
    verdict: Verdict | None = None
    reader: ReaderStats | None = None
    checks: dict[str, bool] = field(default_factory=dict)  # named extra checks that must hold
    numbers: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    skipped: str | None = None  # why the scenario could not run here (counts as neither pass nor fail)
    seconds: float = 0.0
    _t0: float = field(default_factory=time.monotonic, repr=False)

    @property
    def passed(self) -> bool:
        return self.skipped is not None or (
            self.error is None
            and (self.verdict is None or self.verdict.ok)
            and (self.reader is None or self.reader.ok_verdict)
            and all(self.checks.values())
        )

    def finish(self) -> ScenarioResult:
        self.seconds = round(time.monotonic() - self._t0, 1)
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "passed": self.passed, "events": self.events, "faults": self.faults,
            "seconds": self.seconds, "verdict": self.verdict.to_dict() if self.verdict else None,
            "reader": self.reader.to_dict() if self.reader else None, "checks": self.checks,
            "numbers": self.numbers, "error": self.error, "skipped": self.skipped,
        }  # fmt: skip
