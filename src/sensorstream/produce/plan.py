"""What to produce (:class:`ProducePlan`) and what was produced (:class:`ProduceSummary`)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sensorstream.produce.inject import Injection
from sensorstream.produce.messages import DUPLICATE, LATE, MALFORMED, OUT_OF_ORDER, VALID

DEFAULT_RATE = 100.0  # simulator messages/s when --rate is not given
DEFAULT_SPEED = 900.0  # data set replay: a 15-minute step becomes one second


@dataclass(frozen=True)
class ProducePlan:
    """One run of the producer. Exactly one source: the simulator, ``file`` or ``dataset``.

    Injection amounts are exact counts when >= 1 and fractions of the readings when < 1.
    ``rate`` is messages/s (``0`` = as fast as possible; default: 100 for the simulator,
    unthrottled for a file, the data set's own rhythm for a replay).
    """

    sensors: int = 10
    rate: float | None = None
    duration: float | None = None
    count: int | None = None
    seed: int = 0
    late: float = 0
    duplicates: float = 0
    out_of_order: float = 0
    malformed: float = 0
    file: Path | None = None
    dataset: str | None = None
    speed: float = DEFAULT_SPEED
    start: datetime | None = None  # first event time of the simulator / replay; default: now
    topic: str | None = None
    late_by: tuple[float, float] = (120.0, 600.0)
    disorder_window: int = 8
    # The simulator's own spikes and stuck spells (what field devices do); off for clean signals.
    natural_faults: bool = True

    def __post_init__(self) -> None:
        if self.file is not None and self.dataset is not None:
            raise ValueError("--file and --dataset are two different sources; give one of them")
        if self.rate is not None and self.rate < 0:
            raise ValueError("--rate must be >= 0 (0 = as fast as possible)")
        if self.count is not None and self.count < 0:
            raise ValueError("--count must be >= 0")
        if self.duration is not None and self.duration <= 0:
            raise ValueError("--duration must be > 0")
        self.injection  # noqa: B018 - validates the amounts now, with the flag names in the message

    @property
    def injection(self) -> Injection:
        return Injection(
            late=self.late, duplicates=self.duplicates, out_of_order=self.out_of_order,
            malformed=self.malformed, late_by=self.late_by, window=self.disorder_window,
        )  # fmt: skip

    @property
    def source(self) -> str:
        return "file" if self.file is not None else "dataset" if self.dataset is not None else "simulator"


@dataclass
class ProduceSummary:
    """Counts by what was meant (``kinds``) and by what the broker said (``acked``/``failed``).

    ``valid`` counts distinct valid events, including those sent late or out of order;
    ``duplicates`` counts the extra copies; ``malformed`` counts by dead-letter reason.
    """

    topic: str
    source: str
    kinds: Counter[str] = field(default_factory=Counter)
    acked: int = 0
    failed: int = 0
    bytes: int = 0
    elapsed: float = 0.0
    interrupted: bool = False

    @property
    def sent(self) -> int:
        return sum(self.kinds.values())

    @property
    def valid(self) -> int:
        return self.kinds[VALID] + self.kinds[LATE] + self.kinds[OUT_OF_ORDER]

    @property
    def late(self) -> int:
        return self.kinds[LATE]

    @property
    def out_of_order(self) -> int:
        return self.kinds[OUT_OF_ORDER]

    @property
    def duplicates(self) -> int:
        return self.kinds[DUPLICATE]

    @property
    def malformed(self) -> dict[str, int]:
        prefix = f"{MALFORMED}:"
        return {k.removeprefix(prefix): v for k, v in sorted(self.kinds.items()) if k.startswith(prefix)}

    @property
    def rate(self) -> float:
        return self.sent / self.elapsed if self.elapsed > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "source": self.source,
            "sent": self.sent,
            "acked": self.acked,
            "failed": self.failed,
            "valid": self.valid,
            "late": self.late,
            "out_of_order": self.out_of_order,
            "duplicates": self.duplicates,
            "malformed": self.malformed,
            "bytes": self.bytes,
            "elapsed_s": round(self.elapsed, 3),
            "rate_per_s": round(self.rate, 1),
            "interrupted": self.interrupted,
        }
