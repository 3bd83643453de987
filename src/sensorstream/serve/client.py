"""``StoreClient``: how the dashboard, ``sensorstream status`` and scripts read the store.

It asks the writer's read API first (``serve.api``; short timeouts). When nothing answers on
``SENSORSTREAM_API_PORT`` it opens the DuckDB file read-only for the one call and closes it again,
because a reader that keeps the file open would stop the writer from starting. Both paths run
the same code (``reads.gate.ReadGate``: the guard, the limits, the engine lock-down) and go through the same JSON shape
(:func:`to_frame`), so a DataFrame looks the same whichever path produced it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

import duckdb
import httpx
import pandas as pd

from sensorstream.config import Settings
from sensorstream.reads.errors import QueryError, ReadBusy
from sensorstream.reads.execute import Result
from sensorstream.reads.gate import ReadGate
from sensorstream.store.db import StoreLockedError, StoreOpenError, connect

T = TypeVar("T")


class StoreUnavailableError(RuntimeError):
    """Neither the read API answers nor can the DuckDB file be opened read-only."""


def to_frame(payload: Mapping[str, Any]) -> pd.DataFrame:
    """A ``{"columns", "types", "rows"}`` answer as a DataFrame; timestamps become UTC datetimes."""
    frame = pd.DataFrame(payload["rows"], columns=payload["columns"])
    for column, kind in zip(payload["columns"], payload.get("types", []), strict=False):
        if kind.startswith("TIMESTAMP") and len(frame):
            frame[column] = pd.to_datetime(frame[column], utc=True, format="ISO8601")
    frame.attrs["truncated"] = payload.get("truncated", False)
    return frame


def _wire(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime | date) else value


class StoreClient:
    """``query(name, **params)``, ``sql(text, params)`` and ``health()`` against the store."""

    def __init__(self, settings: Settings, *, timeout: float = 5.0, api_url: str | None = None) -> None:
        self.settings = settings
        self.db = Path(settings.db)
        self.api_url = api_url or settings.api_url
        self.timeout = timeout
        # Connecting to a local port either works at once or is refused: 0.5 s is generous.
        self._http = httpx.Client(
            base_url=self.api_url, timeout=httpx.Timeout(timeout, connect=0.5), trust_env=False
        )
        self.mode: Literal["api", "file"] | None = None  # how the last call was served

    # --- the interface -----------------------------------------------------------------------
    def query(self, name: str, **params: Any) -> pd.DataFrame:
        """Run a named query (see ``reads.catalog``); ``None`` parameters mean "not given"."""
        given = {k: _wire(v) for k, v in params.items() if v is not None}
        return to_frame(
            self._either(
                lambda: self._get(f"/query/{name}", params=given),
                lambda gate: gate.run_named(name, given).to_json(),
            )
        )

    def sql(self, text: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> pd.DataFrame:
        """Guarded read-only SQL (one SELECT; parameters bound with ``?``/``$1`` or ``$name``)."""
        wire: Any = None
        if params is not None:
            wire = (
                {k: _wire(v) for k, v in params.items()}
                if isinstance(params, Mapping)
                else [_wire(v) for v in params]
            )
        return to_frame(
            self._either(
                lambda: self._post("/sql", {"sql": text, "params": wire}),
                lambda gate: gate.run(text, params).to_json(),
            )
        )

    def health(self) -> dict[str, Any]:
        """``ok``, ``mode`` (api/file), schema version, last batch id and age."""
        return self._either(
            lambda: self._get("/health"),
            lambda gate: {"ok": True, "mode": "file", **gate.health()},
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> StoreClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the two paths -------------------------------------------------------------------------
    def _either(self, over_api: Callable[[], T], from_file: Callable[[ReadGate], T]) -> T:
        try:
            answer = over_api()
        except (httpx.ConnectError, httpx.ConnectTimeout):
            pass  # nothing listens: no writer running, or one without the API; try the file
        except httpx.TimeoutException as exc:
            # It listens but did not answer in time: the writer holds the file, so no fallback.
            raise StoreUnavailableError(
                f"the store's read API at {self.api_url} did not answer within {self.timeout:g} s: the "
                "process serving it is busy or stuck; retry, or check that process's log"
            ) from exc
        except httpx.TransportError as exc:
            raise StoreUnavailableError(
                f"the store's read API at {self.api_url} broke off the answer ({type(exc).__name__}: "
                f"{exc}); retry, or check the log of the process serving it"
            ) from exc
        else:
            self.mode = "api"
            return answer
        con = self._open_file()
        try:
            self.mode = "file"
            # The same gate as the writer's API: a read of the file obeys the same rules.
            with ReadGate(con, self.settings) as gate:
                return from_file(gate)
        finally:
            con.close()

    def _open_file(self) -> duckdb.DuckDBPyConnection:
        no_api = f"the store's read API at {self.api_url} does not answer"
        if not self.db.exists():
            raise StoreUnavailableError(
                f"{no_api} and there is no DuckDB file at {self.db}: start the pipeline "
                "(sensorstream stream / run) or check SENSORSTREAM_DB"
            )
        try:
            return connect(self.db, read_only=True)
        except StoreLockedError as exc:
            raise StoreUnavailableError(
                f"{no_api}, and {self.db} is locked by the process writing it: readers must go through "
                "that process's read API, so check that it started its StoreService and that both use "
                "the same SENSORSTREAM_API_PORT"
            ) from exc
        except StoreOpenError as exc:
            raise StoreUnavailableError(f"{no_api}, and {exc}") from exc
        except duckdb.ConnectionException as exc:
            # DuckDB refuses a read-only open of a file this same process has open read-write.
            raise StoreUnavailableError(
                f"{no_api}, and {self.db} is open read-write in this process; start its "
                "ReadApi/StoreService and read through it"
            ) from exc

    def _get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        return self._answer(self._http.get(path, params=params))

    def _post(self, path: str, body: Mapping[str, Any]) -> Any:
        return self._answer(self._http.post(path, json=body))

    def _answer(self, response: httpx.Response) -> Any:
        if response.is_success:
            try:
                return response.json()
            except ValueError:  # a web page: another server on the port (the dashboard's?)
                raise StoreUnavailableError(
                    f"what answers at {self.api_url} (HTTP {response.status_code}, "
                    f"{response.headers.get('content-type', 'no content type')}) is not the store's read "
                    "API: check SENSORSTREAM_API_PORT"
                ) from None
        # The API's refusals are one sentence in "error"; anything else (Starlette's Host check, a
        # proxy's page, another server on the port) is named by its status and first line.
        try:
            message = response.json().get("error")
        except (ValueError, AttributeError):
            message = None
        said = message or _first_line(response.text)
        status = f"HTTP {response.status_code}" + (f" {said!r}" if said and not message else "")
        if response.status_code == 429:
            wait = response.headers.get("Retry-After", "1")
            raise ReadBusy(
                message or f"the store's read API at {self.api_url} is busy ({status}); retry in {wait} s",
                retry_after=float(wait) if wait.isdecimal() else 1.0,
            )
        if response.status_code == 400 and said == "Invalid host header":
            raise QueryError(
                f"the store's read API at {self.api_url} does not answer to the Host "
                f"{response.request.url.host!r} ({status}): add it to "
                "SENSORSTREAM_API_ALLOWED_HOSTS of the process serving the API (sensorstream stream / run)"
            )
        if 400 <= response.status_code < 500:
            raise QueryError(
                message
                or f"the store's read API at {self.api_url} refused the request ({status}): check that "
                "SENSORSTREAM_API_PORT is the port of sensorstream's read API"
            )
        raise StoreUnavailableError(
            f"the store's read API at {self.api_url} failed ({status}"
            + (f": {message}" if message else "")
            + "): the process serving it is failing or overloaded; retry, or check its log"
        )


def _first_line(text: str, limit: int = 120) -> str:
    line = text.strip().splitlines()[0].strip() if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


__all__ = ["QueryError", "Result", "StoreClient", "StoreUnavailableError", "to_frame"]
