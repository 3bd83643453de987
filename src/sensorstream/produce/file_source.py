"""``--file F.jsonl``: every line goes out verbatim as one message, in file order.

Nothing is parsed away or re-encoded: a malformed line reaches Kafka byte for byte, which is how
the dead-letter path is tested against real-world junk. Lines are parsed only to pick the key and
to label the message for the summary.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from sensorstream.produce.messages import DUPLICATE, MALFORMED, VALID, Outgoing
from sensorstream.schema import Reason, validate

# Verdicts given before the line was parsed as JSON: it is not parsed again for its key.
UNPARSED = {Reason.NOT_UTF8, Reason.TOO_DEEP, Reason.NOT_JSON}


def _key(line: bytes, reason: str | None) -> bytes | None:
    """The sensor_id as key when the line is a JSON object with a usable one, else no key."""
    if reason in UNPARSED:
        return None  # not JSON the rules could read: nesting too deep for json.loads among them
    try:
        doc = json.loads(line.decode("utf-8"))
    except ValueError:  # also UnicodeDecodeError
        return None
    sensor_id = doc.get("sensor_id") if isinstance(doc, dict) else None
    return sensor_id.encode() if isinstance(sensor_id, str) and sensor_id else None


def file_messages(
    path: Path, valid_ranges: dict[str, tuple[float, float]] | None = None
) -> Iterator[Outgoing]:
    """One message per line; only the line terminator ``\\n`` is removed."""
    seen: set[str] = set()
    with open(path, "rb") as fh:
        for raw in fh:
            line = raw[:-1] if raw.endswith(b"\n") else raw
            event, reason = validate(line, valid_ranges)
            if event is None:
                kind = f"{MALFORMED}:{reason.split(':')[0] if reason else 'unknown'}"
            elif event["event_id"] in seen:
                kind = DUPLICATE
            else:
                seen.add(event["event_id"])
                kind = VALID
            yield Outgoing(_key(line, reason), line, kind)


def count_lines(path: Path) -> int:
    with open(path, "rb") as fh:
        return sum(1 for _ in fh)
