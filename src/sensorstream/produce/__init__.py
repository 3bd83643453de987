"""The producer side: simulated sensors, file replay and real data set replay into Kafka.

Call :func:`produce` with a :class:`ProducePlan`; it returns a :class:`ProduceSummary` with
what was sent, by kind, and what the broker acknowledged.
"""

from sensorstream.produce.plan import ProducePlan, ProduceSummary
from sensorstream.produce.send import produce

__all__ = ["ProducePlan", "ProduceSummary", "produce"]
