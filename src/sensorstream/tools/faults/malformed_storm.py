"""malformed-storm: one message in ten is broken, in every way the contract names.

The bad messages come from ``produce.malformed`` (one builder per ``schema.Reason``, each with
variants: a missing or empty field names the field, so there are more than ten distinct reasons).
Every bad message must land in ``dead_letters`` once, byte for byte, with the reason the reference
validator gives it; every good one must count exactly once; the job must keep running.
"""

from __future__ import annotations

import duckdb

from sensorstream.tools.faults.env import Workspace, api_up, api_url, caught_up, wait_until
from sensorstream.tools.faults.scenario import (
    FaultOptions,
    ScenarioResult,
    for_kafka,
    send,
    start_reader,
    summary_numbers,
)
from sensorstream.tools.reference import Expectation, StreamSpec, build

MIN_KINDS = 10


def run(opts: FaultOptions) -> ScenarioResult:
    events = opts.size(100_000, 20_000)
    result = ScenarioResult("malformed-storm", faults="10% malformed messages of every dead-letter kind")
    with Workspace("malformed", opts.settings, opts.workdir, opts.keep) as ws:
        try:
            bootstrap = opts.bootstrap or ws.kafka().bootstrap_servers
            topic = ws.topic(bootstrap, f"faults-malformed-{ws.dir.name[-6:]}")
            ranges = opts.settings.valid_ranges
            # 10 % of all messages: malformed / (valid + malformed) = 0.1 -> 1/9 of the readings.
            messages = build(StreamSpec(events=events, seed=opts.seed, malformed=1 / 9), ranges)
            expected = Expectation(messages, ranges, behind=5_000 + 1_000, ahead=1_000)
            summary = send(ws, for_kafka(opts.settings, bootstrap, topic), messages)
            result.events, result.numbers = summary.sent, summary_numbers(summary)
            result.numbers["malformed_sent"] = sum(summary.malformed.values())
            result.checks["all produced acked"] = summary.acked == len(messages)

            env = ws.stream_env(bootstrap, topic, max_offsets_per_trigger=5_000)
            job = ws.start_stream(env)
            wait_until(lambda: api_up(api_url(env)), 180, "the read API", job)
            reader = start_reader(ws, env)
            wait_until(lambda: caught_up(api_url(env), bootstrap, topic), 900, "the job to catch up", job)
            result.reader = reader.stop([])
            code = job.terminate()
            result.checks["stream job stopped cleanly (exit 0)"] = code == 0
            result.verdict = expected.compare(env["SENSORSTREAM_DB"])
            result.numbers["dead_letter_kinds"] = result.verdict.dead_kinds
            result.numbers["malformed_share"] = round(result.verdict.dead_expected / len(messages), 3)
            result.checks[f">= {MIN_KINDS} dead-letter kinds"] = result.verdict.dead_kinds >= MIN_KINDS
            con = duckdb.connect(env["SENSORSTREAM_DB"], read_only=True)
            try:
                rows_in = con.execute("SELECT sum(input_rows) FROM pipeline_metrics").fetchone()[0]
            finally:
                con.close()
            result.checks["every message accounted for in pipeline_metrics"] = rows_in == len(messages)
        except Exception as exc:
            result.error = f"{type(exc).__name__}: {exc}"
        ws.failed = not result.passed
    return result.finish()
