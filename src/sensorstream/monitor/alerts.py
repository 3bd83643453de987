"""Alert rules: logged at WARNING when they start firing, and exported as `sensorstream_alert`.

* ``lag_growing``: the total consumer lag grew for ``ALERT_LAG_BATCHES`` batches in a row and is
  above ``ALERT_MIN_LAG``, so the job is not keeping up with the producers (small wobbles of a
  healthy stream, a few dozen records, do not count).
* ``stalled``: records are waiting in Kafka (lag > 0) but no batch committed for ``STALE_AFTER``
  (:func:`sensorstream.monitor.health.is_stalled`, as in ``sensorstream status``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from sensorstream.monitor.health import is_stalled

log = logging.getLogger(__name__)


@dataclass
class AlertRules:
    lag_batches: int
    stale_after: float
    min_lag: int = 0
    firing: dict[str, bool] = field(default_factory=lambda: {"lag_growing": False, "stalled": False})
    _lags: list[int] = field(default_factory=list)
    _last_batch: float = field(default_factory=time.monotonic)

    def on_batch(self, total_lag: int, now: float | None = None) -> None:
        self._last_batch = time.monotonic() if now is None else now
        self._lags = [*self._lags, total_lag][-(self.lag_batches + 1) :]
        growing = (
            len(self._lags) > self.lag_batches
            and total_lag > self.min_lag
            and all(b > a for a, b in zip(self._lags, self._lags[1:], strict=False))
        )
        self._set("lag_growing", growing, f"consumer lag grew for {self.lag_batches} batches: {self._lags}")
        self._set("stalled", False, "")

    def on_tick(self, total_lag: int, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        age = now - self._last_batch
        self._set("stalled", is_stalled(total_lag, age, self.stale_after),
                  f"{total_lag} records waiting and no batch for {age:.0f}s")  # fmt: skip

    def _set(self, rule: str, on: bool, why: str) -> None:
        if on and not self.firing[rule]:
            log.warning("alert %s firing: %s", rule, why, extra={"alert": rule})
        elif not on and self.firing[rule]:
            log.info("alert %s resolved", rule, extra={"alert": rule})
        self.firing[rule] = on
