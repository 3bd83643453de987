"""What every scenario takes and returns (:class:`FaultOptions`, :class:`ScenarioResult`), and the
steps they share: settings for a broker, sending the known stream, the reader."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sensorstream.config import Settings
from sensorstream.produce import ProducePlan, ProduceSummary, produce
from sensorstream.tools.faults.env import Workspace, api_url
from sensorstream.tools.reader import ReaderProcess, ReaderStats
from sensorstream.tools.reference import Message, Verdict, write_jsonl


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


def for_kafka(settings: Settings, bootstrap: str, topic: str) -> Settings:
    # A fresh Settings rather than model_copy: model_copy would carry over a cached
    # kafka_client_config that still points at the old broker.
    return Settings(**{**settings.model_dump(), "bootstrap_servers": bootstrap, "topic": topic})


def send(
    ws: Workspace, settings: Settings, messages: list[Message], *, rate: float = 0.0,
    stop: threading.Event | None = None,
) -> ProduceSummary:  # fmt: skip
    """The messages through the real producer path (``produce --file``: idempotent, acks=all)."""
    path = write_jsonl(messages, ws.dir / "events.jsonl")
    return produce(settings, ProducePlan(file=path, rate=rate), stop=stop)


class Background:
    """``produce`` on a thread, so a scenario can break the broker while it runs."""

    def __init__(self, ws: Workspace, settings: Settings, messages: list[Message], rate: float) -> None:
        self.summary: ProduceSummary | None = None
        self.error: BaseException | None = None
        self.stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ws, settings, messages, rate), daemon=True)
        ws.on_exit(self.stop.set)

    def _run(self, *args: Any) -> None:
        try:
            self.summary = send(*args[:3], rate=args[3], stop=self.stop)
        except BaseException as exc:  # reported by join()
            self.error = exc

    def start(self) -> Background:
        self._thread.start()
        return self

    def join(self, timeout: float) -> ProduceSummary:
        self._thread.join(timeout)
        if self._thread.is_alive():
            self.stop.set()
            raise TimeoutError(f"the producer did not finish within {timeout:.0f}s")
        if self.error is not None:
            raise self.error
        assert self.summary is not None
        return self.summary


def start_reader(ws: Workspace, env: dict[str, str]) -> ReaderProcess:
    reader = ReaderProcess(api_url(env), ws.dir / f"reader-{len(list(ws.dir.glob('reader-*')))}.json")
    ws.on_exit(reader.kill)
    return reader


def summary_numbers(summary: ProduceSummary) -> dict[str, Any]:
    return {"sent": summary.sent, "acked": summary.acked, "failed": summary.failed,
            "produce_seconds": round(summary.elapsed, 1)}  # fmt: skip


def path_in(text: str, path: Path) -> bool:
    return str(Path(path).resolve()) in text or str(path) in text
