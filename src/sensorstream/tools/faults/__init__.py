"""Fault injection: run a known stream, break something, compare the store to the expectation.

One module per scenario (``kill9``, ``broker_restart``, ``malformed_storm``, ``disk``,
``cluster_run``), the reader process (``reader``), the known stream and its expected result
(``events``), process and port handling (``env``) and the runner (``runner``), which
``sensorstream faults`` calls.
"""
