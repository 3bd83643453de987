"""kill9: SIGKILL the stream job at random points, restart it each time; nothing lost or doubled.

The whole stream is in Kafka before the job first starts and batches are bounded by
``MAX_OFFSETS_PER_TRIGGER``. The job is a real ``python -m sensorstream stream`` process; each
kill takes its process group (driver and JVM) at a random moment after a random number of
committed batches, so kills land in planning, in Spark, in the DuckDB transaction or between
batches. The last start runs ``--until-idle``; then the store is compared to the expectation.
"""

from __future__ import annotations

import math
import random
import time

from sensorstream.tools.faults.env import Workspace, api_up, api_url, caught_up, commits, wait_until
from sensorstream.tools.faults.scenario import (
    FaultOptions,
    ScenarioResult,
    for_kafka,
    send,
    start_reader,
    summary_numbers,
)
from sensorstream.tools.reference import Expectation, StreamSpec, build


def run(opts: FaultOptions) -> ScenarioResult:
    events = opts.size(200_000, 20_000)
    kills = 3 if opts.quick else 5
    batch = 2_000 if opts.quick else 10_000
    result = ScenarioResult("kill9", faults=f"{kills} x kill -9 of the stream job")
    rng = random.Random(opts.seed)
    with Workspace("kill9", opts.settings, opts.workdir, opts.keep) as ws:
        try:
            bootstrap = opts.bootstrap or ws.kafka().bootstrap_servers
            topic = ws.topic(bootstrap, f"faults-kill9-{ws.dir.name[-6:]}")
            ranges = opts.settings.valid_ranges
            messages = build(StreamSpec(events=events, seed=opts.seed, malformed=0.005), ranges)
            expected = Expectation(messages, ranges, behind=batch + 1_000, ahead=1_000)
            summary = send(ws, for_kafka(opts.settings, bootstrap, topic), messages)
            result.events, result.numbers = summary.sent, summary_numbers(summary)
            result.checks["all produced acked"] = summary.acked == len(messages)

            env = ws.stream_env(bootstrap, topic, max_offsets_per_trigger=batch)
            batches = math.ceil(len(messages) / batch)
            points = sorted(rng.sample(range(1, max(batches - 1, kills + 1)), kills))
            reader = start_reader(ws, env)
            down: list[tuple[float, float]] = []
            since, killed_at = time.time(), []
            for target in points:
                job = ws.start_stream(env)
                down.append((since, wait_until(lambda: api_up(api_url(env)), 180, "the read API", job)))
                wait_until(lambda t=target: commits(env) >= t, 300, f"{target} committed batches", job)
                time.sleep(rng.uniform(0.0, 1.5))  # anywhere in the next batch's life
                since = time.time()
                job.kill9()
                killed_at.append(commits(env))
            # The last start runs to the end; the reader stops before the job does, so every
            # refusal it saw falls inside a kill.
            job = ws.start_stream(env)
            down.append((since, wait_until(lambda: api_up(api_url(env)), 180, "the read API", job)))
            wait_until(lambda: caught_up(api_url(env), bootstrap, topic), 900, "the job to catch up", job)
            result.reader = reader.stop(down)
            code = job.terminate()
            result.checks["final run stopped cleanly (exit 0)"] = code == 0
            if code != 0:
                result.error = f"the final run exited with {code}:\n{job.log_tail()}"
            result.verdict = expected.compare(env["SENSORSTREAM_DB"])
            result.numbers.update(kills=len(killed_at), commits_at_kills=killed_at, batches=batches,
                                  batch=batch)  # fmt: skip
            result.checks["killed mid-stream"] = len(killed_at) == kills and killed_at[-1] < batches
        except Exception as exc:
            result.error = f"{type(exc).__name__}: {exc}"
        ws.failed = not result.passed  # keep logs and stores of a failed run
    return result.finish()
