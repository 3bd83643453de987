"""Broken messages, one builder per dead-letter reason in :class:`sensorstream.schema.Reason`.

Each builder starts from a real reading, so a broken message looks like what a faulty device or a
bad gateway would send, and :func:`sensorstream.schema.validate` files it under exactly that
reason (the tests check this for every kind and variant).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

from sensorstream.schema import MAX_DEPTH, REQUIRED, Reason, encode

Event = dict[str, Any]


def _not_utf8(event: Event, rng: random.Random, ranges: dict) -> bytes:
    good = encode(event)
    if rng.random() < 0.5:
        # A Latin-1 gateway: "é" as the single byte 0xE9, which UTF-8 cannot start a char with here.
        return good.replace(b'"site":"', b'"site":"caf\xe9-', 1) if b'"site"' in good else b"\xe9" + good
    # Line noise; 0xFF can never occur in UTF-8, so this stays invalid whatever follows.
    return b"\xff" + bytes(rng.randrange(0x80, 0x100) for _ in range(23))


def _not_json(event: Event, rng: random.Random, ranges: dict) -> bytes:
    good = encode(event)
    return rng.choice(
        [
            good[: len(good) // 2],  # truncated mid-write
            f"{event['sensor_id']};{event['event_time']};{event['value']}".encode(),  # a CSV line
            good.replace(b'"', b"'"),  # single quotes
        ]
    )


def _not_object(event: Event, rng: random.Random, ranges: dict) -> bytes:
    return json.dumps(rng.choice([[event], event["value"], event["sensor_id"], None])).encode()


def _missing(event: Event, rng: random.Random, ranges: dict) -> bytes:
    field = rng.choice(REQUIRED)
    return encode({k: v for k, v in event.items() if k != field})


def _wrong_type(event: Event, rng: random.Random, ranges: dict) -> bytes:
    field, value = rng.choice(
        [
            ("value", str(event["value"])),  # a number sent as text
            ("value", True),
            ("event_time", 1_700_000_000_000),  # epoch millis instead of ISO-8601
            ("sensor_id", 42),
        ]
    )
    return encode({**event, field: value})


def _not_finite(event: Event, rng: random.Random, ranges: dict) -> bytes:
    return encode({**event, "value": rng.choice([float("nan"), float("inf"), float("-inf")])})


def _bad_time(event: Event, rng: random.Random, ranges: dict) -> bytes:
    text = rng.choice(["2026-13-45T25:61:00Z", "yesterday", event["event_time"].rstrip("Z"), ""])
    return encode({**event, "event_time": text})


def _empty(event: Event, rng: random.Random, ranges: dict) -> bytes:
    return encode({**event, rng.choice(["event_id", "sensor_id"]): rng.choice(["", "   "])})


def _out_of_range(event: Event, rng: random.Random, ranges: dict) -> bytes:
    kind = event.get("sensor_type")
    if kind not in ranges:
        kind = sorted(ranges)[0]
    low, high = ranges[kind]
    span = max(high - low, 1.0)
    value = rng.choice([high + span * rng.uniform(0.1, 1), low - span * rng.uniform(0.1, 1)])
    return encode({**event, "sensor_type": kind, "value": round(value, 3)})


def _too_deep(event: Event, rng: random.Random, ranges: dict) -> bytes:
    if rng.random() < 0.5:
        return b"[" * 1000  # a runaway writer's brackets
    depth = rng.choice([MAX_DEPTH, 1000])  # a field nested one level past the limit, or far past it
    return encode(event)[:-1] + b',"trace":' + b"[" * depth + b"]" * depth + b"}"


BUILDERS: dict[str, Callable[[Event, random.Random, dict], bytes]] = {
    Reason.NOT_UTF8: _not_utf8,
    Reason.NOT_JSON: _not_json,
    Reason.NOT_OBJECT: _not_object,
    Reason.MISSING: _missing,
    Reason.WRONG_TYPE: _wrong_type,
    Reason.NOT_FINITE: _not_finite,
    Reason.BAD_TIME: _bad_time,
    Reason.EMPTY: _empty,
    Reason.OUT_OF_RANGE: _out_of_range,
    Reason.TOO_DEEP: _too_deep,
}
KINDS: tuple[str, ...] = tuple(BUILDERS)


def kinds_for(valid_ranges: dict[str, tuple[float, float]]) -> tuple[str, ...]:
    """Every kind we can build; ``out_of_range`` needs at least one configured range."""
    return KINDS if valid_ranges else tuple(k for k in KINDS if k != Reason.OUT_OF_RANGE)


def build(kind: str, event: Event, rng: random.Random, valid_ranges: dict[str, tuple[float, float]]) -> bytes:
    """A message that ``schema.validate`` rejects with reason ``kind`` (its prefix, for some)."""
    return BUILDERS[kind](event, rng, valid_ranges)
