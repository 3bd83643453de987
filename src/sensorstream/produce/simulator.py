"""Simulated sensors with believable signals, deterministic for a given seed.

Each sensor has a daily cycle, gaussian noise and a slow drift; now and then a reading spikes or
a sensor gets stuck on one value for a while (what real field devices do). Readings stay inside
the physically valid range of their type, so the simulator's normal output is never a dead letter:
bad data is only what the injection switches add on purpose.
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
SPIKE_PROBABILITY = 0.002
STUCK_PROBABILITY = 0.0005
STUCK_READINGS = (20, 120)


@dataclass
class Sensor:
    sensor_id: str
    sensor_type: str
    site: str
    offset: float
    drift_sign: float
    stuck_for: int = 0
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
    ) -> None:
        if sensors < 1:
            raise ValueError("--sensors must be at least 1")
        self.start = start
        self.interval = interval
        self.valid_ranges = valid_ranges or {}
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
        if sensor.stuck_for > 0 and sensor.last_value is not None:
            sensor.stuck_for -= 1
            return sensor.last_value
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
        if rng.random() < SPIKE_PROBABILITY:
            value += rng.choice((-1, 1)) * spec.spike * rng.uniform(0.6, 1.0)
        if sensor.sensor_type == "vibration":
            value = abs(value)  # a magnitude
        value = round(self._clamp(sensor.sensor_type, value), 3)
        if rng.random() < STUCK_PROBABILITY:
            sensor.stuck_for = rng.randint(*STUCK_READINGS)
        sensor.last_value = value
        return value

    def _clamp(self, sensor_type: str, value: float) -> float:
        low, high = self.valid_ranges.get(sensor_type, (-math.inf, math.inf))
        return min(max(value, low), high)
