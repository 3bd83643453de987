"""disk: the DuckDB directory stops accepting writes mid-run; the job must stop and say where.

How the directory is made unwritable, honestly, given where this runs (as root):

* ``chmod 0555`` changes nothing for root (it bypasses permission bits), and even for other
  users it would not stop writes to files DuckDB already holds open.
* ``chattr +i`` (the ext4 immutable flag) does bind root: checked on this machine, it makes even
  a ``write`` on a file descriptor opened *before* the flag was set fail with EPERM, and no new
  file (DuckDB's ``.wal``) can be created in an immutable directory. That is what a
  write-protected volume looks like to DuckDB, on the store's own path, mid-run. It is used here.
* ``mount -t tmpfs -o size=1m`` also works in this sandbox (a full disk, ENOSPC), as would
  ``mount -o remount,ro`` (EROFS); both need the store on a mount made for the test, so they
  are not used, and they need more privilege than the immutable flag.
* Not root: ``chmod`` is tried, but only counts if it stops a write on an already open file.

If neither works (a filesystem without the immutable flag), the scenario says so and is skipped.
After the job has stopped, the flags are removed (the fix) and a restart must finish the stream
without losing or doubling anything.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from sensorstream.tools.faults.env import Workspace, api_up, api_url, caught_up, commits, wait_until
from sensorstream.tools.faults.scenario import (
    FaultOptions,
    ScenarioResult,
    for_kafka,
    path_in,
    send,
    summary_numbers,
)
from sensorstream.tools.reference import Expectation, StreamSpec, build


def mechanism(probe_dir: Path) -> str | None:
    """``chattr`` or ``chmod`` when it really stops this process's writes here, else ``None``."""
    probe = probe_dir / "probe"
    probe.write_bytes(b"x")
    fd = os.open(probe, os.O_WRONLY | os.O_APPEND)
    try:
        for name in ("chmod", "chattr"):
            if name == "chmod" and os.geteuid() == 0:
                continue  # root ignores permission bits
            try:
                _lock([probe], name)
            except (OSError, subprocess.CalledProcessError):
                continue
            try:
                os.write(fd, b"y")
            except PermissionError:
                return name
            finally:
                _unlock([probe], name)
        return None
    finally:
        os.close(fd)
        probe.unlink(missing_ok=True)


def _lock(paths: list[Path], how: str) -> None:
    for p in paths:
        if how == "chattr":
            subprocess.run(["chattr", "+i", str(p)], check=True, capture_output=True)
        else:
            p.chmod(0o555 if p.is_dir() else 0o444)


def _unlock(paths: list[Path], how: str) -> None:
    for p in paths:
        if not p.exists():
            continue
        if how == "chattr":
            subprocess.run(["chattr", "-i", str(p)], check=False, capture_output=True)
        else:
            p.chmod(0o755 if p.is_dir() else 0o644)


def run(opts: FaultOptions) -> ScenarioResult:
    events = opts.size(100_000, 20_000)
    result = ScenarioResult("disk", faults="DuckDB directory made unwritable mid-run, then fixed")
    with Workspace("disk", opts.settings, opts.workdir, opts.keep) as ws:
        try:
            how = mechanism(ws.dir)
            result.numbers["mechanism"] = how or "none"
            if how is None:
                result.skipped = (
                    "neither chmod nor chattr +i stops writes to an open file here (see faults/disk.py)"
                )
                return result.finish()
            result.faults = f"DuckDB directory made unwritable mid-run ({'chattr +i' if how == 'chattr' else 'chmod'}), then fixed"
            bootstrap = opts.bootstrap or ws.kafka().bootstrap_servers
            topic = ws.topic(bootstrap, f"faults-disk-{ws.dir.name[-6:]}")
            ranges = opts.settings.valid_ranges
            messages = build(StreamSpec(events=events, seed=opts.seed, malformed=0.005), ranges)
            batch = max(1_000, len(messages) // 10)
            expected = Expectation(messages, ranges, behind=batch + 1_000, ahead=1_000)
            summary = send(ws, for_kafka(opts.settings, bootstrap, topic), messages)
            result.events, result.numbers = summary.sent, {**result.numbers, **summary_numbers(summary)}

            db_dir = ws.dir / "job" / "db"  # its own directory: checkpoints and logs stay writable
            db = db_dir / "store.duckdb"
            env = ws.stream_env(bootstrap, topic, db=db, max_offsets_per_trigger=batch)
            job = ws.start_stream(env)
            wait_until(lambda: commits(env) >= 2, 300, "2 committed batches", job)
            locked = [db_dir, *sorted(db_dir.iterdir())]
            ws.on_exit(lambda: _unlock(locked, how))  # even if anything below fails
            _lock(locked, how)
            result.numbers["commits_before_lock"] = commits(env)
            try:
                code = job.proc.wait(180)
            except Exception:
                code = None
            log = job.log_path.read_text(errors="replace")
            result.numbers["exit_code_when_unwritable"] = code
            lines = log.splitlines()
            result.numbers["error_lines"] = [ln[:300] for ln in lines if str(db) in ln and "rror" in ln][:2]
            result.numbers["last_lines"] = [ln[:200] for ln in lines[-5:]]
            result.checks["job stopped when the store became unwritable"] = code not in (None, 0)
            # What the operator reads: the end of the output, not a line somewhere in a long trace.
            result.checks["its final error names the DuckDB path"] = path_in("\n".join(lines[-15:]), db)
            if code is None:
                job.kill9()

            _unlock(locked, how)  # the fix
            job = ws.start_stream(env)
            wait_until(lambda: api_up(api_url(env)), 180, "the read API after the fix", job)
            wait_until(lambda: caught_up(api_url(env), bootstrap, topic), 900, "the job to catch up", job)
            code = job.terminate()
            result.checks["restart after the fix stopped cleanly (exit 0)"] = code == 0
            result.verdict = expected.compare(db)
        except Exception as exc:
            result.error = f"{type(exc).__name__}: {exc}"
        ws.failed = not result.passed
    return result.finish()
