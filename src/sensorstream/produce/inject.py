"""The injection switches: late events, duplicates, disorder and malformed messages.

Each switch takes an exact count (``>= 1``) or a fraction (``< 1``) of the readings. With a known
total, the affected readings are drawn up front, so the run sends exactly that many; an endless
stream draws a fraction per reading. Every message leaves labelled with what it is, and labels
are only given when true (a reading held back for disorder counts as out of order only once a
newer reading has actually overtaken it), so the summary can be checked against the topic.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta

from sensorstream.produce import malformed
from sensorstream.produce.messages import (
    DUPLICATE,
    LATE,
    MALFORMED,
    OUT_OF_ORDER,
    VALID,
    Outgoing,
    Reading,
)
from sensorstream.schema import encode, format_time

# With an exact count but no known end, the affected readings are drawn from this many readings.
ENDLESS_HORIZON = 1_000


@dataclass(frozen=True)
class Injection:
    late: float = 0
    duplicates: float = 0
    out_of_order: float = 0
    malformed: float = 0
    # Minutes behind, by default: past any window plus the allowed lateness, so truly late.
    late_by: tuple[float, float] = (120.0, 600.0)
    # Disorder and duplicate copies stay within this many following messages.
    window: int = 8

    def __post_init__(self) -> None:
        for name in ("late", "duplicates", "out_of_order", "malformed"):
            amount = getattr(self, name)
            if amount < 0 or (amount >= 1 and amount != int(amount)):
                raise ValueError(
                    f"--{name.replace('_', '-')} {amount}: give a whole count (>= 1) or a fraction (< 1)"
                )
        if self.window < 1:
            raise ValueError("the disorder window must be at least 1 message")

    @property
    def active(self) -> bool:
        return any((self.late, self.duplicates, self.out_of_order, self.malformed))


def _exact(amount: float, total: int | None) -> int | None:
    """How many, when that is known up front; ``None`` means "draw per reading"."""
    if amount >= 1:
        return int(amount)
    if amount > 0 and total is not None:
        return round(amount * total)
    return None


class Injector:
    """Turns readings into labelled messages, applying the switches in :class:`Injection`."""

    def __init__(
        self,
        injection: Injection,
        total: int | None,
        seed: int = 0,
        valid_ranges: dict[str, tuple[float, float]] | None = None,
    ) -> None:
        self.injection = injection
        self.valid_ranges = valid_ranges or {}
        self.kinds = malformed.kinds_for(self.valid_ranges)
        # Its own generator: switching injection on must not change the simulated values.
        self._rng = random.Random(f"inject-{seed}")
        self._fates: dict[int, str] = {}
        self._malformed_at: dict[int, int] = {}
        self._malformed_made = 0
        self._plan(total)

    def _plan(self, total: int | None) -> None:
        inj, rng = self.injection, self._rng
        span = total if total is not None else ENDLESS_HORIZON
        # Reading 0 is never late or disordered: there must be an earlier reading to be late against.
        free = list(range(1, span))
        rng.shuffle(free)
        for fate, amount in ((LATE, inj.late), (OUT_OF_ORDER, inj.out_of_order), (DUPLICATE, inj.duplicates)):
            n = _exact(amount, total)
            if n is None:
                continue
            if n > len(free):
                raise ValueError(
                    f"cannot make {n} {fate.replace('_', ' ')} event(s) out of {span} readings "
                    "(late, out-of-order and duplicated readings are distinct readings)"
                )
            for index in free[:n]:
                self._fates[index] = fate
            free = free[n:]
        n = _exact(inj.malformed, total)
        if n is not None:
            for index in (rng.randrange(span) for _ in range(n)):
                self._malformed_at[index] = self._malformed_at.get(index, 0) + 1
        self._draw = {
            fate: amount
            for fate, amount in (
                (LATE, inj.late),
                (OUT_OF_ORDER, inj.out_of_order),
                (DUPLICATE, inj.duplicates),
            )
            if _exact(amount, total) is None and amount > 0
        }
        self._draw_malformed = inj.malformed if _exact(inj.malformed, total) is None else 0.0

    def _fate(self, index: int) -> str:
        if index in self._fates:
            return self._fates[index]
        if index > 0 and self._draw:
            r = self._rng.random()
            for fate, p in self._draw.items():
                if r < p:
                    return fate
                r -= p
        return VALID

    def _malformed_count(self, index: int) -> int:
        n = self._malformed_at.get(index, 0)
        if self._draw_malformed and self._rng.random() < self._draw_malformed:
            n += 1
        return n

    def _malformed(self, reading: Reading) -> Outgoing:
        # Cycle through the kinds so that `--malformed 9` covers every reason once.
        kind = self.kinds[self._malformed_made % len(self.kinds)]
        self._malformed_made += 1
        value = malformed.build(kind, reading.event, self._rng, self.valid_ranges)
        return Outgoing(reading.key, value, f"{MALFORMED}:{kind}", reading.due)

    def run(self, readings: Iterable[Reading]) -> Iterator[Outgoing]:
        inj, rng = self.injection, self._rng
        held: list[list] = []  # [reading, newer readings still to pass it, passed so far]
        copies: list[list] = []  # [messages to wait, Outgoing]
        for index, reading in enumerate(readings):
            for _ in range(self._malformed_count(index)):
                yield self._malformed(reading)
            fate = self._fate(index)
            if fate == OUT_OF_ORDER:
                held.append([reading, rng.randint(1, inj.window), 0])
                continue
            if fate == LATE:
                behind = timedelta(seconds=rng.uniform(*inj.late_by))
                late_event = {**reading.event, "event_time": format_time(reading.event_time - behind)}
                yield Outgoing(reading.key, encode(late_event), LATE, reading.due)
                continue
            out = Outgoing(reading.key, encode(reading.event), VALID, reading.due)
            yield out
            if fate == DUPLICATE:
                copies.append([rng.randint(0, inj.window), Outgoing(out.key, out.value, DUPLICATE, out.due)])
            # An on-time reading overtakes held readings that are older than it.
            still_held = []
            for entry in held:
                if reading.event_time > entry[0].event_time:
                    entry[1] -= 1
                    entry[2] += 1
                if entry[1] <= 0:
                    yield self._release(entry)
                else:
                    still_held.append(entry)
            held = still_held
            for entry in copies:
                entry[0] -= 1
            for entry in [c for c in copies if c[0] < 0]:
                copies.remove(entry)
                yield entry[1]
        for entry in held:
            yield self._release(entry)
        for _, copy in copies:
            yield copy

    @staticmethod
    def _release(entry: list) -> Outgoing:
        reading, _, overtaken = entry
        # Only a reading that a newer one overtook is really out of order.
        return Outgoing(reading.key, encode(reading.event), OUT_OF_ORDER if overtaken else VALID, reading.due)
