"""Rate control: a token bucket, so ``--rate`` holds on average while small bursts stay cheap."""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    """``take()`` blocks until a token is available; tokens refill at ``rate`` per second.

    The bucket refills from the real elapsed time, so an oversleep (``time.sleep`` is coarse at
    high rates) is paid back by the next calls instead of drifting the average below ``rate``.
    """

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be > 0 (use no bucket at all for 'as fast as possible')")
        self.rate = rate
        # 50 ms worth of tokens: enough to absorb scheduler jitter, too little to notice as a burst.
        self.capacity = burst if burst is not None else max(1.0, rate / 20)
        self._clock = clock
        self._sleep = sleep
        self._tokens = 1.0
        self._last = clock()

    def take(self, n: float = 1.0) -> float:
        """Take ``n`` tokens, sleeping if needed; returns the seconds slept."""
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= n:
            self._tokens -= n
            return 0.0
        wait = (n - self._tokens) / self.rate
        self._sleep(wait)
        self._tokens -= n  # goes negative; the refill on the next call settles the debt
        return wait
