"""``--dataset NAME``: replay real sensor data shipped inside the pinned ``pvanalytics`` package.

The files come with the installed package (``pvanalytics/data/``), so a replay needs no download.
Each column becomes a sensor; time is compressed by ``speed`` and shifted onto the wall clock, so
the replay's event times run alongside "now" (the last reading is stamped when it is sent) and
the stream's watermark sees a live-looking feed with the data set's real gaps and rhythm.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib import resources

import pandas as pd

from sensorstream.produce.messages import Reading
from sensorstream.schema import make_event

# Column name patterns -> (sensor_type, unit); the first match wins, so specific ones go first.
COLUMN_TYPES: list[tuple[str, str, str]] = [
    (r"power_kw", "power", "kW"),
    (r"power", "power", "W"),
    (r"irradiance", "irradiance", "W/m2"),
    (r"temp", "temperature", "C"),
    (r"current", "current", "A"),
    (r"volt", "voltage", "V"),
    (r"wind_speed", "wind_speed", "m/s"),
]


@dataclass(frozen=True)
class DatasetSpec:
    file: str
    site: str
    description: str
    reader: Callable[[object], pd.DataFrame]
    # Columns left out, and why: the data set's own defects are not ours to replay.
    skip: tuple[str, ...] = ()


def _wide_csv(time_format: str | None) -> Callable[[object], pd.DataFrame]:
    def read(path: object) -> pd.DataFrame:
        frame = pd.read_csv(path, index_col=0)
        frame.index = pd.to_datetime(frame.index, format=time_format).tz_localize("UTC")
        return frame

    return read


def _parquet(path: object) -> pd.DataFrame:
    frame = pd.read_parquet(path)
    # The time is a column named "index" here (tz-aware, UTC-7); make it the index, in UTC.
    frame = frame.set_index("index")
    frame.index = pd.DatetimeIndex(frame.index).tz_convert("UTC")
    return frame


DATASETS: dict[str, DatasetSpec] = {
    "serf_west_15min": DatasetSpec(
        "serf_west_15min.csv", "nrel-serf-west", "NREL SERF West PV system, 14 sensors, 15 min, 5 days",
        _wide_csv("%Y-%m-%d %H:%M:%S"),
        # das_temperature__785 repeats ac_power__773 value for value (up to 5.6 kW): a logging
        # mix-up in the source, and out of range for any temperature.
        skip=("das_temperature__785",),
    ),
    "nrel_RSF_II": DatasetSpec(
        "nrel_RSF_II.csv", "nrel-rsf-ii", "NREL RSF II PV system, 12 sensors, 15 min, 5 days",
        _wide_csv("%m/%d/%Y %H:%M"),
    ),
    "system_4_module_temperature": DatasetSpec(
        "system_4_module_temperature.parquet", "system-4", "one module temperature, 15 min, 2015-2019 with gaps",
        _parquet,
    ),
}  # fmt: skip


def resolve(name: str) -> str:
    """The data set's canonical name; the file name (with or without suffix) works too."""
    wanted = name.lower().removesuffix(".csv").removesuffix(".parquet")
    for key in DATASETS:
        if key.lower() == wanted:
            return key
    raise ValueError(f"unknown data set {name!r}; choose one of: {', '.join(DATASETS)}")


def column_type(column: str) -> tuple[str, str]:
    for pattern, sensor_type, unit in COLUMN_TYPES:
        if re.search(pattern, column):
            return sensor_type, unit
    return "other", ""


def load(name: str) -> pd.DataFrame:
    """Long format, oldest first: time, sensor_id, sensor_type, unit, site, value (gaps dropped)."""
    spec = DATASETS[resolve(name)]
    with resources.as_file(resources.files("pvanalytics") / "data" / spec.file) as path:
        wide = spec.reader(path)
    wide = wide.drop(columns=[c for c in spec.skip if c in wide.columns])
    wide.index.name = "time"
    long = wide.reset_index().melt(id_vars="time", var_name="column", value_name="value").dropna()
    types = {c: column_type(c) for c in wide.columns}
    long["sensor_id"] = spec.site + "/" + long["column"]
    long["sensor_type"] = long["column"].map(lambda c: types[c][0])
    long["unit"] = long["column"].map(lambda c: types[c][1])
    long["site"] = spec.site
    long["value"] = long["value"].astype(float)
    return long.sort_values(["time", "sensor_id"], kind="stable").reset_index(drop=True)


def readings(
    name: str, start: datetime, speed: float, seed: int = 0, limit: int | None = None
) -> tuple[int, Iterator[Reading]]:
    """(how many, the readings): each due ``(t - t0) / speed`` seconds after ``start``."""
    if speed <= 0:
        raise ValueError("--speed must be > 0")
    frame = load(name)
    if limit is not None:
        frame = frame.head(limit)
    t0 = frame["time"].iloc[0] if len(frame) else None

    def generate() -> Iterator[Reading]:
        for row in frame.itertuples(index=False):
            due = (row.time - t0).total_seconds() / speed
            event_time = start + timedelta(seconds=due)
            event_id = str(
                uuid.uuid5(uuid.NAMESPACE_URL, f"{name}/{seed}/{row.sensor_id}/{row.time.isoformat()}")
            )
            event = make_event(
                event_id,
                row.sensor_id,
                event_time,
                round(row.value, 6),
                row.sensor_type,
                row.unit or None,
                row.site,
            )
            yield Reading(row.sensor_id.encode(), event, event_time, due)

    return len(frame), generate()
