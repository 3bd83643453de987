"""Settings travel to child processes as SENSORSTREAM_* variables: Settings -> env -> Settings is exact.

`run`, the dashboard, the read API's process and the fault runs all start children with
``settings_env``; a value written any other way (``str()`` of a list, say) reached a child as
something else, e.g. API_ALLOWED_HOSTS as the names "['127.0.0.1'" and "'::1']".
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import types
import typing
from pathlib import Path
from typing import Any

import annotated_types
import pytest
from hypothesis import given, reject
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from pydantic import ByteSize, ValidationError

from sensorstream.config import ENV_PREFIX, Duration, Settings, load_settings, settings_env

# Text an environment variable can hold: no NUL, no lone surrogate.
TEXT = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=30)
FLOATS = st.floats(allow_nan=False)
# Fields whose validators accept only a narrow shape: drawn in that shape, or nearly all is rejected.
SHAPED: dict[str, st.SearchStrategy[Any]] = {
    "host": st.sampled_from(["localhost", "::1"])
    | st.tuples(st.integers(0, 255), st.integers(0, 255)).map(lambda p: f"127.{p[0]}.{p[1]}.1"),
    "window": st.floats(min_value=1e-3, max_value=86_000),  # RETENTION (a day) must hold WINDOW + lateness
    "trigger": st.floats(min_value=1e-3, max_value=1e6),
    "read_timeout": st.floats(min_value=1e-3, max_value=3600),
    "slide": st.none() | st.floats(min_value=1e-3, max_value=60),  # at most the default WINDOW
    "allowed_lateness": st.floats(min_value=0, max_value=86_000),
    "retention": st.just(0.0) | st.floats(min_value=90),  # 0 (keep) or at least WINDOW + lateness
    "anomaly_sigma_floor": st.dictionaries(TEXT, st.floats(min_value=1e-300, allow_infinity=False)),
}
# Settings a field is valid only beside: an endpoint off loopback needs a password of its own.
BESIDE: dict[str, dict[str, Any]] = {"pg_host": {"pg_password": "not the default"}}


def _bounds(metadata: list[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for m in metadata:
        if isinstance(m, annotated_types.Ge):
            out["min_value"] = m.ge
        elif isinstance(m, annotated_types.Gt):
            out["min_value"] = m.gt
            out["exclude_min"] = True
        elif isinstance(m, annotated_types.Le):
            out["max_value"] = m.le
    return out


def strategy(annotation: Any, metadata: list[Any]) -> st.SearchStrategy[Any]:
    """Values of a field's type within its declared bounds (other validators may still refuse some)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return strategy(args[0], [*metadata, *annotation.__metadata__])
    if origin in (typing.Union, types.UnionType):
        return st.none() | strategy(next(a for a in args if a is not type(None)), metadata)
    if origin is typing.Literal:
        return st.sampled_from(args)
    if origin is dict:
        value = strategy(args[1], [])
        if typing.get_origin(args[1]) is tuple:  # a (low, high) range: drawn in order
            value = value.map(lambda pair: tuple(sorted(pair)))
        return st.dictionaries(TEXT, value, max_size=4)
    if origin is tuple:
        return st.tuples(*(strategy(a, []) for a in args))
    if origin is list:
        return st.lists(TEXT, max_size=4)
    bounds = _bounds(metadata)
    if annotation in (int, ByteSize):
        bounds.pop("exclude_min", None)
        return st.integers(**{k: int(v) for k, v in bounds.items()})
    if annotation is float:
        if any(m in typing.get_args(Duration)[1:] for m in metadata):
            bounds.setdefault("min_value", 0.0)  # a duration is never negative
        return st.floats(allow_nan=False, **bounds)
    if annotation is Path:
        return TEXT.map(Path)
    if annotation is str:
        return TEXT.filter(lambda t: len(t) >= getattr(next(iter(metadata), None), "min_length", 0))
    raise AssertionError(f"no strategy for {annotation!r}: teach this test the new field's type")


def reloaded(settings: Settings) -> Settings:
    """What a child gets: load_settings() over exactly the environment settings_env gave it."""
    env = settings_env(settings, base={})
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        return load_settings()
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.mark.parametrize("name", list(Settings.model_fields))
@hsettings(max_examples=30, deadline=None)
@given(data=st.data())
def test_every_field_survives_the_trip_through_the_environment(name, data):
    field = Settings.model_fields[name]
    value = data.draw(SHAPED[name] if name in SHAPED else strategy(field.annotation, field.metadata))
    try:
        settings = Settings(**BESIDE.get(name, {}), **{name: value})
    except ValidationError:
        reject()
    child = reloaded(settings)
    assert getattr(child, name) == getattr(settings, name)
    assert child == settings


@pytest.mark.process
def test_lists_dicts_none_durations_sizes_paths_and_secrets_reach_a_real_child(tmp_path):
    settings = load_settings(
        data_dir=tmp_path / "a dir, with commas",
        api_allowed_hosts=["127.0.0.1", "localhost", "::1", "[::1]", "a,b"],
        valid_ranges={"temperature": (-math.inf, 150.0), 'odd "type"': (0.1, 0.30000000000000004)},
        slide=None,
        window="90 seconds",
        trigger="250 ms",
        read_max_bytes="3 MiB",
        pg_password='p@ss word "quoted"',
        kafka_sasl_password="s3cret",
    )
    # An inherited SLIDE must not come back in place of None.
    env = settings_env(settings, base={**os.environ, f"{ENV_PREFIX}SLIDE": "5", "sensorstream_window": "7"})
    code = "import json; from sensorstream.config import load_settings; print(json.dumps(load_settings().model_dump(), default=str))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    child = json.loads(out.stdout)
    assert child == json.loads(json.dumps(settings.model_dump(), default=str))
    assert child["api_allowed_hosts"] == ["127.0.0.1", "localhost", "::1", "[::1]", "a,b"]
    assert child["slide"] is None and child["window"] == 90.0 and child["read_max_bytes"] == 3 * 2**20


@pytest.mark.parametrize(
    ("text", "hosts"),
    [
        ("127.0.0.1, localhost", ["127.0.0.1", "localhost"]),
        ('["::1", "a b"]', ["::1", "a b"]),
        ("[::1]", ["[::1]"]),
    ],
)
def test_a_name_list_is_written_by_hand_with_commas_or_as_json(monkeypatch, text, hosts):
    monkeypatch.setenv("SENSORSTREAM_API_ALLOWED_HOSTS", text)
    assert load_settings().api_allowed_hosts == hosts
