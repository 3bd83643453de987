"""Simulated sensors with believable signals, deterministic for a given seed.

Each sensor has a daily cycle, gaussian noise and a slow drift; now and then (``natural``) a
reading spikes or a sensor gets stuck on one value for a while, as real field devices do: on
average once every ``SPIKE_EVERY`` / ``STUCK_EVERY`` seconds of a sensor's event time, whatever
the rate. Readings stay inside the physically valid range of their type, so the simulator's normal
output is never a dead letter: bad data is only what the injection switches add on purpose.

For measuring the alert rules, ``faults`` injects known spikes, drifts and stuck spells at known
times on known sensors; ``injected`` lists them afterwards (the ground truth).
"""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from sensorstream.produce.messages import Reading
from sensorstream.schema import make_event


@dataclass(frozen=True)
class SignalSpec:
    unit: str
    base: float
    daily_amplitude: float
    noise: float
    drift_per_hour: float
    spike: float
    peak_hour: float  # local hour of the daily maximum


SIGNALS: dict[str, SignalSpec] = {
    "temperature": SignalSpec("C", 21.0, 4.0, 0.15, 0.05, 15.0, 15.0),
    "humidity": SignalSpec("%", 50.0, 12.0, 0.8, 0.2, 35.0, 5.0),
    "pressure": SignalSpec("hPa", 1013.0, 1.5, 0.2, 0.1, 60.0, 10.0),
    "vibration": SignalSpec("mm/s", 3.0, 1.2, 0.3, 0.02, 20.0, 12.0),
}
SITES = ("plant-a", "plant-b", "plant-c")
SPIKE_EVERY = 900.0  # seconds of a sensor's event time between natural spikes, on average
STUCK_EVERY = 3600.0
STUCK_SECONDS = (20.0, 120.0)
# An injected drift moves the sensor away by this many noise sigmas per minute.
DRIFT_SIGMAS_PER_MINUTE = 10.0
FAULT_KINDS = ("spike", "drift", "stuck")


@dataclass(frozen=True)
class Fault:
    """An injected fault: sensor number ``sensor`` (0-based) from ``at`` seconds after the start.

    A spike is one reading; a drift ramps away for ``seconds`` and then ends (the sensor is
    recalibrated); a stuck sensor repeats its last value for ``seconds``.
    """

    sensor: int
    kind: str
    at: float
    seconds: float = 60.0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"fault kind {self.kind!r}: one of {', '.join(FAULT_KINDS)}")


@dataclass
class Injected:
    """What a fault really did: the sensor, the kind, and the event times of its first and last reading."""

    sensor_id: str
    kind: str
    start: datetime
    end: datetime
    value: float  # the spike's value, or the one a stuck sensor repeats


@dataclass
class Sensor:
    sensor_id: str
    sensor_type: str
    site: str
    offset: float
    drift_sign: float
    stuck_until: datetime | None = None
    last_value: float | None = None


class Simulator:
    """``sensors`` sensors reporting round-robin, ``interval`` seconds of event time apart.

    Reading ``i`` belongs to sensor ``i % sensors`` and carries event time ``start + i*interval``,
    so event times rise monotonically and match the wall clock when sent at ``1/interval`` per s.
    """

    def __init__(
        self,
        sensors: int,
        start: datetime,
        interval: float,
        seed: int = 0,
        valid_ranges: dict[str, tuple[float, float]] | None = None,
        *,
        natural: bool = True,
        faults: tuple[Fault, ...] = (),
    ) -> None:
        """``natural``: random spikes and stuck spells; ``faults``: known ones (see :class:`Fault`)."""
        if sensors < 1:
            raise ValueError("--sensors must be at least 1")
        self.start = start
        self.interval = interval
        self.valid_ranges = valid_ranges or {}
        # Per reading, from per-second rates: a sensor reports every `interval * sensors` seconds.
        every = interval * sensors
        self._p_spike = min(1.0, every / SPIKE_EVERY) if natural else 0.0
        self._p_stuck = min(1.0, every / STUCK_EVERY) if natural else 0.0
        self._faults = {i: [f for f in faults if f.sensor == i] for i in range(sensors)}
        if any(f.sensor >= sensors or f.sensor < 0 for f in faults):
            raise ValueError(f"a fault names a sensor beyond the {sensors} simulated")
        self._open: dict[tuple[int, int], Injected] = {}
        self.injected: list[Injected] = []
        self._rng = random.Random(seed)
        types = list(SIGNALS)
        self.sensors = [
            Sensor(
                sensor_id=f"sensor-{i + 1:04d}",
                sensor_type=types[i % len(types)],
                site=SITES[(i // len(types)) % len(SITES)],
                offset=self._rng.gauss(0, SIGNALS[types[i % len(types)]].daily_amplitude / 4),
                drift_sign=self._rng.choice((-1.0, 1.0)),
            )
            for i in range(sensors)
        ]

    def readings(self, total: int | None = None) -> Iterator[Reading]:
        """``total`` readings (endless when ``None``)."""
        i = 0
        n = len(self.sensors)
        while total is None or i < total:
            sensor = self.sensors[i % n]
            event_time = self.start + timedelta(seconds=i * self.interval)
            value = self._value(sensor, event_time)
            if self._faults[i % n]:
                value = self._inject(i % n, sensor, event_time, value)
            event_id = str(uuid.UUID(int=self._rng.getrandbits(128), version=4))
            event = make_event(
                event_id, sensor.sensor_id, event_time, value, sensor.sensor_type,
                SIGNALS[sensor.sensor_type].unit, sensor.site,
            )  # fmt: skip
            yield Reading(sensor.sensor_id.encode(), event, event_time)
            i += 1

    def _value(self, sensor: Sensor, at: datetime) -> float:
        spec = SIGNALS[sensor.sensor_type]
        rng = self._rng
        if sensor.stuck_until is not None and sensor.last_value is not None:
            if at < sensor.stuck_until:
                return sensor.last_value
            sensor.stuck_until = None
        hours = (at - self.start).total_seconds() / 3600
        hour_of_day = at.hour + at.minute / 60 + at.second / 3600
        daily = spec.daily_amplitude * math.cos(2 * math.pi * (hour_of_day - spec.peak_hour) / 24)
        value = (
            spec.base
            + sensor.offset
            + daily
            + sensor.drift_sign * spec.drift_per_hour * hours
            + rng.gauss(0, spec.noise)
        )
        if rng.random() < self._p_spike:
            value += self._spike(spec)
        value = self._finish(sensor, value)
        if rng.random() < self._p_stuck:
            sensor.stuck_until = at + timedelta(seconds=rng.uniform(*STUCK_SECONDS))
        sensor.last_value = value
        return value

    def _spike(self, spec: SignalSpec) -> float:
        return self._rng.choice((-1, 1)) * spec.spike * self._rng.uniform(0.6, 1.0)

    def _finish(self, sensor: Sensor, value: float) -> float:
        if sensor.sensor_type == "vibration":
            value = abs(value)  # a magnitude
        return round(self._clamp(sensor.sensor_type, value), 3)

    def _inject(self, index: int, sensor: Sensor, at: datetime, value: float) -> float:
        """Apply the sensor's injected faults that cover ``at``; record what they did."""
        spec = SIGNALS[sensor.sensor_type]
        elapsed = (at - self.start).total_seconds()
        for number, fault in enumerate(self._faults[index]):
            done = self._open.get((index, number))
            if elapsed < fault.at or (
                done and (fault.kind == "spike" or elapsed >= fault.at + fault.seconds)
            ):
                continue
            if fault.kind == "spike":
                value = self._finish(sensor, value + self._spike(spec))
            elif fault.kind == "drift":
                ramp = spec.noise * DRIFT_SIGMAS_PER_MINUTE * (elapsed - fault.at) / 60
                value = self._finish(sensor, value + sensor.drift_sign * ramp)
            elif done:  # stuck: the value it stuck on
                value = done.value
            if done:
                done.end = at
            else:
                self._open[(index, number)] = Injected(sensor.sensor_id, fault.kind, at, at, value)
                self.injected.append(self._open[(index, number)])
            sensor.last_value = value
        return value

    def _clamp(self, sensor_type: str, value: float) -> float:
        low, high = self.valid_ranges.get(sensor_type, (-math.inf, math.inf))
        return min(max(value, low), high)
