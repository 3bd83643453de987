"""PNG plots of the benchmark reports, so a reader can look instead of read.

Drawn from the JSON reports alone (never from a live run), so a report kept from an earlier run
can be re-plotted. ``matplotlib.figure.Figure`` is used without pyplot: no global state, no GUI
backend, safe inside a process that also runs Spark.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

SERIES = (  # per-batch latency columns of pipeline_metrics, as drawn
    ("latency_p50_ms", "p50", "tab:blue", 1.0),
    ("latency_p95_ms", "p95", "tab:orange", 1.0),
    ("latency_max_ms", "max", "tab:red", 0.6),
)


def plot_stream(result: dict[str, Any], out_dir: Path) -> list[Path]:
    """``stream-latency.png`` (per-batch latency over the fixed-rate phases) and ``stream-throughput.png``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return [_latency_over_time(result, out_dir / "stream-latency.png"),
            _throughput_vs_rate(result, out_dir / "stream-throughput.png")]  # fmt: skip


def _latency_over_time(result: dict[str, Any], path: Path) -> Path:
    fig = Figure(figsize=(11, 6.5), layout="constrained")
    lat, lag = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    for n, phase in enumerate(result["rates"]):
        batches = [b for b in phase["batches"] if b["input_rows"]]
        if not batches:
            continue
        t = [b["t"] for b in batches]
        # Shade each phase and label it with its rate, so a latency step lines up with its cause.
        lat.axvspan(min(t), max(t), alpha=0.06, color="grey")
        lat.text(min(t), 1.0, f" {phase['rate'] / 1000:g}K/s", transform=lat.get_xaxis_transform(),
                 va="top", fontsize=9)  # fmt: skip
        for key, name, color, width in SERIES:
            # Label the first phase's lines only: one legend entry per series, not one per phase.
            lat.plot(t, [_s(b[key]) for b in batches], color=color, lw=width, label=name if n == 0 else "_")
        lag.plot(t, [b["consumer_lag"] or 0 for b in batches], color="tab:purple", lw=1)
    lat.legend(loc="upper left", bbox_to_anchor=(0, 0.93))
    lat.set_ylabel("event -> commit latency per batch (s)")
    lat.set_title(f"Stream latency over time ({_settings_line(result)})")
    lat.grid(alpha=0.3)
    lag.set_ylabel("consumer lag (events)")
    lag.set_xlabel("seconds since the first phase began")
    lag.grid(alpha=0.3)
    fig.savefig(path, dpi=110)
    return path


def _throughput_vs_rate(result: dict[str, Any], path: Path) -> Path:
    phases = result["rates"]
    fig = Figure(figsize=(9, 5.5), layout="constrained")
    ax = fig.subplots()
    target = [p["rate"] for p in phases]
    produced = [p["produced_per_second"] for p in phases]
    # What the job processed while the producer ran: the produced rate minus the lag it left behind.
    processed = [max(p["produced_per_second"] - p["lag_at_end"] / _phase_seconds(p), 0) for p in phases]
    ax.plot(target, target, ls=":", color="grey", label="target rate")
    ax.plot(target, produced, "o-", label="produced (events/s)")
    ax.plot(target, processed, "s-", label="processed by the job (events/s)")
    drain = result.get("drain", {}).get("events_per_second")
    if drain:
        ax.axhline(drain, color="tab:green", ls="--", lw=1, label=f"drain capacity {drain:,.0f}/s")
    ax.set_xlabel("target producer rate (events/s)")
    ax.set_ylabel("events/s")
    ax.grid(alpha=0.3)
    p99 = ax.twinx()
    p99.plot(target, [_s(p["p99_ms"]) for p in phases], "^--", color="tab:red", label="p99 latency (s)")
    p99.set_ylabel("event -> commit p99 (s)", color="tab:red")
    lines = ax.get_legend_handles_labels()[0] + p99.get_legend_handles_labels()[0]
    ax.legend(lines, [str(line.get_label()) for line in lines], loc="upper left")
    ax.set_title(f"Throughput vs rate ({_settings_line(result)})")
    fig.savefig(path, dpi=110)
    return path


def plot_scale(result: dict[str, Any], path: Path) -> Path:
    """``scale.png``: drain throughput per axis (cores, partitions, sensors), one panel each."""
    axes_order = [
        a for a in ("cores", "partitions", "sensors") if any(p["axis"] == a for p in result["points"])
    ]
    fig = Figure(figsize=(4 * max(len(axes_order), 1) + 1, 4.5), layout="constrained")
    panels = fig.subplots(1, max(len(axes_order), 1), squeeze=False)[0]
    for panel, axis in zip(panels, axes_order, strict=False):
        points = [p for p in result["points"] if p["axis"] == axis]
        labels = [p["label"] for p in points]
        values = [p["events_per_second"] for p in points]
        # Positions, not the labels: "100" and "10,000" would be taken for numbers and re-ordered.
        bars = panel.bar(range(len(points)), values, color="tab:blue")
        panel.set_xticks(range(len(points)), labels)
        panel.bar_label(bars, labels=[f"{v / 1000:.1f}K" for v in values], fontsize=9)
        panel.set_title(f"by {axis}")
        panel.set_ylabel("drain events/s (after the first batch)")
        panel.grid(axis="y", alpha=0.3)
    fig.suptitle(f"Scaling: {result['events']:,} events drained per point")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def _s(ms: float | None) -> float | None:
    return None if ms is None else ms / 1000


def _phase_seconds(phase: dict[str, Any]) -> float:
    rate = phase["produced_per_second"] or 1
    return max(phase["produced"] / rate, 1.0)


def _settings_line(result: dict[str, Any]) -> str:
    s = result.get("settings", {})
    return (f"{s.get('spark_master')}, {s.get('partitions')} partitions, trigger {s.get('trigger_s')} s, "
            f"{result.get('sensors', '?')} sensors")  # fmt: skip


def plot_soak(part: dict[str, Any], path: Path, title: str) -> Path:
    samples = part["samples"]
    t = [s["t"] / 60 for s in samples]
    fig = Figure(figsize=(10, 11))
    axes = fig.subplots(4, 1, sharex=True)
    axes[0].plot(t, [s["consumer_lag"] for s in samples], label="consumer lag (events)")
    axes[0].set_ylabel("lag (events)")
    axes[1].plot(t, [s["batch_ms"] for s in samples], label="batch duration (ms)")
    axes[1].plot(
        t, [s["batch_latency_max_p99_ms"] for s in samples], label="event->commit, batch max, p99 (ms)"
    )
    axes[1].plot(t, [s.get("latency_p99_ms") for s in samples], label="event->commit p99, every event (ms)")
    axes[1].set_ylabel("ms")
    axes[2].plot(t, [s["python_rss_mb"] for s in samples], label="Python RSS (MB)")
    axes[2].plot(t, [s["jvm_rss_mb"] for s in samples], label="JVM RSS (MB)")
    axes[2].plot(t, [s["file_mb"] for s in samples], label="DuckDB file + WAL (MB)")
    axes[2].set_ylabel("MB")
    for table in ("readings", "window_stats", "pipeline_metrics"):
        axes[3].plot(t, [s["rows"].get(table) for s in samples], label=table)
    # Log scale: readings are ~10^7 rows, the windows and metrics ~10^3-10^4; each must show it is flat.
    axes[3].set_yscale("log")
    axes[3].set_ylabel("rows (log)")
    axes[3].set_xlabel("minutes")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize=8)
    fig.suptitle(f"{title}, retention {part['retention_s']:.0f} s")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    return path
