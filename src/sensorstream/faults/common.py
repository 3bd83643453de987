"""Steps the scenarios share: settings for a broker, sending the known stream, the reader."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from sensorstream.config import Settings
from sensorstream.faults.env import Workspace, api_url
from sensorstream.faults.events import Message, write_jsonl
from sensorstream.faults.reader import Reader
from sensorstream.produce import ProducePlan, ProduceSummary, produce


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


def start_reader(ws: Workspace, env: dict[str, str]) -> Reader:
    reader = Reader(api_url(env), ws.dir / f"reader-{len(list(ws.dir.glob('reader-*')))}.json")
    ws.on_exit(reader.kill)
    return reader


def summary_numbers(summary: ProduceSummary) -> dict[str, Any]:
    return {"sent": summary.sent, "acked": summary.acked, "failed": summary.failed,
            "produce_seconds": round(summary.elapsed, 1)}  # fmt: skip


def path_in(text: str, path: Path) -> bool:
    return str(Path(path).resolve()) in text or str(path) in text
