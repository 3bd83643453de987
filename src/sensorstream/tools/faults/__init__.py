"""Fault injection: run a known stream, break something, compare the store to the expectation.

One module per scenario (``kill9``, ``broker_restart``, ``malformed_storm``, ``hostile_reader``,
``hostile_pg``, ``disk``, ``cluster_run``); the attackers those two run (``hostile``,
``pg_attacks``); what every scenario takes and returns (``scenario``); its processes, ports and
brokers (``env``); the runner (``suite``) and the ``sensorstream faults`` command (``commands``).
The known stream and the store it must leave are ``tools.reference``'s.
"""
