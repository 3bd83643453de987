"""cluster: the unchanged job on a Spark standalone cluster (master + 2 workers) reading a
3-broker, RF 3, 6-partition topic into DuckDB; the store must equal the expectation.

The only difference from a local run is ``SENSORSTREAM_SPARK_MASTER=spark://127.0.0.1:<port>``.
Evidence that the executors did the reading: the master grants the app both workers' cores, and
each worker's work dir holds an executor of the app.
"""

from __future__ import annotations

import time

from sensorstream.tools.faults.env import Workspace, api_up, api_url, caught_up, wait_until
from sensorstream.tools.faults.scenario import (
    FaultOptions,
    ScenarioResult,
    for_kafka,
    send,
    start_reader,
    summary_numbers,
)
from sensorstream.tools.local.cluster import SparkCluster
from sensorstream.tools.ports import free_block
from sensorstream.tools.reference import Expectation, StreamSpec, build


def run(opts: FaultOptions) -> ScenarioResult:
    events = opts.size(200_000, 20_000)
    result = ScenarioResult(
        "cluster", faults="Spark standalone, 2 workers x 1 core; Kafka 3 nodes, RF 3, 6 partitions"
    )
    with Workspace("cluster", opts.settings, opts.workdir, opts.keep) as ws:
        try:
            if opts.bootstrap:  # a test's shared broker: one node, so RF 1
                bootstrap, replication = opts.bootstrap, 1
                result.faults = "Spark standalone, 2 workers x 1 core; Kafka 1 node, 6 partitions"
            else:
                bootstrap, replication = ws.kafka(brokers=3).bootstrap_servers, 3
            topic = ws.topic(
                bootstrap, f"faults-cluster-{ws.dir.name[-6:]}", partitions=6, replication=replication
            )
            ranges = opts.settings.valid_ranges
            batch = 2_000 if opts.quick else 20_000
            messages = build(StreamSpec(events=events, seed=opts.seed, malformed=0.005), ranges)
            expected = Expectation(messages, ranges, behind=batch + 1_000, ahead=1_000)
            summary = send(ws, for_kafka(opts.settings, bootstrap, topic), messages)
            result.events, result.numbers = summary.sent, summary_numbers(summary)

            port = free_block(2, rng=ws.rng)
            cluster = SparkCluster(
                ws.dir / "spark-cluster", port=port, webui_port=port + 1, workers=2, cores=1, memory="1g"
            )
            ws.on_exit(cluster.stop)
            t0 = time.monotonic()
            master = cluster.start()
            result.numbers["cluster_start_s"] = round(time.monotonic() - t0, 1)
            env = ws.stream_env(bootstrap, topic, spark_master=master, max_offsets_per_trigger=batch)
            job = ws.start_stream(env)
            wait_until(lambda: api_up(api_url(env)), 240, "the read API", job)
            reader = start_reader(ws, env)
            t1 = time.monotonic()
            wait_until(lambda: caught_up(api_url(env), bootstrap, topic), 1_200, "the job to catch up", job)
            drain = time.monotonic() - t1
            apps = (cluster.state() or {}).get("activeapps", [])
            result.reader = reader.stop([])
            code = job.terminate()
            executors = sorted(
                p.parent.name for p in (ws.dir / "spark-cluster").glob("work-*/app-*/*/stderr")
            )
            result.numbers.update(
                drain_s=round(drain, 1), events_per_s=round(len(messages) / drain), batch=batch,
                app_cores=sum(a.get("cores", 0) for a in apps), executor_dirs=len(executors),
                workers=[w["id"] for w in (cluster.state() or {}).get("workers", [])],
            )  # fmt: skip
            result.checks["job stopped cleanly (exit 0)"] = code == 0
            result.checks["app ran on both workers (2 cores, 2 executors)"] = (
                result.numbers["app_cores"] == 2 and len(executors) >= 2
            )
            result.verdict = expected.compare(env["SENSORSTREAM_DB"])
        except Exception as exc:
            result.error = f"{type(exc).__name__}: {exc}"
        ws.failed = not result.passed
    return result.finish()
