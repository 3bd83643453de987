"""What the sources hand to the producer: readings in, labelled messages out."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

# How a message was meant; the summary counts these and tests check them against the topic.
VALID = "valid"
LATE = "late"
OUT_OF_ORDER = "out_of_order"
DUPLICATE = "duplicate"
MALFORMED = "malformed"  # reported as "malformed:<schema.Reason>"


@dataclass(frozen=True, slots=True)
class Reading:
    """One valid sensor reading from a source, before any injection.

    ``due`` is when to send it, in seconds after the run starts (replays keep their rhythm);
    ``None`` means "as the rate allows".
    """

    key: bytes
    event: dict[str, Any]
    event_time: datetime
    due: float | None = None


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One Kafka message, labelled with what it is meant to be."""

    key: bytes | None
    value: bytes
    kind: str
    due: float | None = None
