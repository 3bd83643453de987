"""The one free-port picker for tests, benchmarks and fault runs.

Ports are drawn at random below Linux's ephemeral range (32768 and up, where the kernel picks the
source ports of outgoing connections), so a port we pick is not taken a moment later by a client
socket, and two suites on one machine seldom draw the same block. A port is only "free" until
somebody binds it: callers bind soon after, and a caller that needs a block (a KRaft broker's
client and controller listeners) asks for the block at once.
"""

from __future__ import annotations

import random

from sensorstream.procs import port_in_use

LOW, HIGH = 20_000, 32_000
_rng = random.Random()


def free_block(count: int, host: str = "127.0.0.1", rng: random.Random | None = None) -> int:
    """The first of ``count`` consecutive ports that nothing listens on right now."""
    rng = rng or _rng
    for _ in range(500):
        first = rng.randrange(LOW, HIGH - count)
        if not any(port_in_use(p, host) for p in range(first, first + count)):
            return first
    raise RuntimeError(f"no {count} consecutive free ports in {LOW}..{HIGH}")


def free_port(host: str = "127.0.0.1", rng: random.Random | None = None) -> int:
    """One port that nothing listens on right now."""
    return free_block(1, host, rng)


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` different free ports (a block: nothing binds them until the caller does)."""
    first = free_block(count, host)
    return list(range(first, first + count))
