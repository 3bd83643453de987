"""``sensorstream cluster start|stop``: a local Spark standalone cluster on loopback."""

from __future__ import annotations

from typing import Annotated

import typer

from sensorstream.config import Settings
from sensorstream.terminal import console, settings_or_exit

app = typer.Typer(
    help="A local Spark standalone cluster (master + workers) on loopback.", no_args_is_help=True
)


def register(root: typer.Typer) -> None:
    """Put ``cluster …`` on the ``sensorstream`` menu (the ``sensorstream.commands`` entry point)."""
    root.add_typer(app, name="cluster")


MasterPortOpt = Annotated[int, typer.Option("--port", help="master port")]
WebuiPortOpt = Annotated[int, typer.Option("--webui-port", help="master web UI port")]


def _spark_cluster(
    settings: Settings, port: int, webui_port: int, workers: int = 2, cores: int = 1, memory: str = "1g"
):
    from sensorstream.tools.local.cluster import SparkCluster

    return SparkCluster(settings.data_dir / "spark-cluster", port, webui_port, workers, cores, memory)


@app.command("start")
def cluster_start(
    port: MasterPortOpt = 7077,
    webui_port: WebuiPortOpt = 8080,
    workers: Annotated[int, typer.Option(help="worker processes")] = 2,
    cores: Annotated[int, typer.Option(help="cores per worker")] = 1,
    memory: Annotated[str, typer.Option(help="memory per worker (its executor's size)")] = "1g",
) -> None:
    """Start a master and workers in the background (logs in data/spark-cluster)."""
    settings = settings_or_exit()
    cluster = _spark_cluster(settings, port, webui_port, workers, cores, memory)
    url = cluster.start()
    console.print(
        f"spark cluster up: [bold]{url}[/bold] ({workers} x {cores} core(s), {memory}); UI {cluster.webui}; "
        f"run the job on it with SENSORSTREAM_SPARK_MASTER={url} sensorstream stream"
    )


@app.command("stop")
def cluster_stop(
    port: MasterPortOpt = 7077,
    webui_port: WebuiPortOpt = 8080,
    workers: Annotated[int, typer.Option(help="worker processes")] = 2,
) -> None:
    """Stop the workers, then the master (SIGTERM, then SIGKILL after 30 s)."""
    stopped = _spark_cluster(settings_or_exit(), port, webui_port, workers).stop()
    console.print(f"stopped {', '.join(stopped)}" if stopped else "no spark cluster was running")
