"""The SparkSession, built from settings: Kafka jars on the classpath, UTC, quiet logs.

Spark's own log4j output goes to ``<data_dir>/logs/spark.log``; our logs stay readable.

The Spark JVM (the driver's Py4J gateway) runs in its own session, so a signal to our process
group (Ctrl-C in a terminal, systemd's ``KillMode=control-group``) reaches only the Python
driver. The driver then stops the query after the batch in flight and stops the JVM; before,
the JVM died on the group's SIGTERM mid-batch and the job failed. The JVM still ends with us:
it exits when the pipe to its stdin closes, which happens however this process ends.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

from pyspark import SparkConf, SparkContext
from pyspark.errors import PySparkRuntimeError
from pyspark.find_spark_home import _find_spark_home
from pyspark.java_gateway import launch_gateway
from pyspark.sql import SparkSession

from sensorstream.config import Settings
from sensorstream.jvm import cds
from sensorstream.jvm.classpath import ensure_jars, java_binary

log = logging.getLogger(__name__)


class SparkStartError(RuntimeError):
    """The Spark JVM did not start; the message ends with its log's last lines."""


# How long query.stop() waits for Spark's query thread. Short on purpose: by then StreamJob.stop has
# let the batch in flight commit and refuses any other, so nothing is left for that thread to do
# that matters; one busy planning the next trigger (Kafka offset requests, slow to interrupt) kept
# a stop waiting for seconds. The thread ends on its own or with the JVM.
QUERY_STOP_TIMEOUT_MS = 250

# How Spark writes the offset and commit logs (one small file each per trigger, written then renamed
# into place). Its default goes through Hadoop's FileContext, whose rename on the local file system
# asks for the link status of both paths by running `readlink` in a child process (Hadoop's native
# library, which would make it a system call, is not shipped with PySpark): forks of a JVM with a
# large heap, ~85 ms per log, ~170 ms of every trigger (per-trigger `walCommit` and `commitOffsets`
# at 5 K events/s: 86 / 87 ms, with this class 22 / 24 ms). Hadoop's FileSystem API renames with
# one rename(2), which is atomic on a local file system, the one our `checkpoint_dir` (a path)
# always names: the driver alone writes these logs, also with a remote Spark master.
CHECKPOINT_FILE_MANAGER = (
    "org.apache.spark.sql.execution.streaming.checkpointing.FileSystemBasedCheckpointFileManager"
)

LOG4J2 = """\
rootLogger.level = warn
rootLogger.appenderRef.file.ref = file
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = %d{{HH:mm:ss.SSS}} %p %c{{1}}: %m%n
logger.kafka.name = org.apache.kafka
logger.kafka.level = error
logger.spark_kafka.name = org.apache.spark.sql.kafka010
logger.spark_kafka.level = warn
"""


LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


def on_this_machine(master: str) -> bool:
    """``local[*]``, or a ``spark://`` master (list) whose every host is a loopback address."""
    if master.startswith("local"):
        return True
    hosts = master.split("://", 1)[-1].split(",")
    return all(h.rsplit(":", 1)[0] in LOOPBACK for h in hosts)


def build_session(
    settings: Settings, app_name: str = "sensorstream", jvm_options: list[str] | None = None
) -> SparkSession:
    """``jvm_options``: the driver JVM's own (default: map its class archive, if trained)."""
    java = java_binary()  # fail early with a sentence rather than a Py4J stack trace
    # Python workers must use this interpreter (the venv has pyarrow; the system one may not).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    jars = ensure_jars(settings.cache_dir, "spark-kafka")
    log_dir = (Path(settings.data_dir) / "logs").resolve()
    log_dir.mkdir(parents=True, exist_ok=True)
    log_conf = log_dir / "spark-log4j2.properties"
    log_conf.write_text(LOG4J2.format(log=log_dir / "spark.log"))
    java_opts = f"-Dlog4j2.configurationFile=file:{log_conf} -Duser.timezone=UTC"
    driver_opts = cds.use_options(class_archive(settings, java)) if jvm_options is None else jvm_options
    local = on_this_machine(settings.spark_master)
    options = {
        "spark.app.name": app_name,
        "spark.master": settings.spark_master,
        "spark.jars": ",".join(str(j.resolve()) for j in jars),
        "spark.driver.extraJavaOptions": " ".join([java_opts, *driver_opts]),
        # Executors elsewhere do not have the driver's log4j file; UTC matters everywhere.
        "spark.executor.extraJavaOptions": java_opts if local else "-Duser.timezone=UTC",
        "spark.driver.memory": settings.spark_driver_memory,
        "spark.sql.session.timeZone": "UTC",
        # 200 shuffle partitions made a 2-core run several times slower; size it to the machine.
        "spark.sql.shuffle.partitions": str(settings.shuffle_partitions),
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.adaptive.enabled": "false",
        # The job keeps no Spark state today (windows are merged in DuckDB, see sink/merge.py), but a
        # stateful operator added later should get RocksDB, not the default in-JVM-heap store.
        "spark.sql.streaming.stateStore.providerClass":
            "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider",
        "spark.sql.warehouse.dir": str((Path(settings.data_dir) / "spark-warehouse").resolve()),
        # Spark's default waits forever for the query's thread on stop(); see QUERY_STOP_TIMEOUT_MS.
        "spark.sql.streaming.stopTimeout": str(QUERY_STOP_TIMEOUT_MS),
        # See CHECKPOINT_FILE_MANAGER: two log writes per trigger cost ~170 ms with Spark's default.
        "spark.sql.streaming.checkpointFileManagerClass": CHECKPOINT_FILE_MANAGER,
    }  # fmt: skip
    if local:
        # Nothing outside this machine needs the driver. A remote cluster's executors must connect
        # back to it, so there Spark's own choice (or SPARK_LOCAL_IP / spark.driver.host) stands.
        options |= {"spark.driver.bindAddress": "127.0.0.1", "spark.driver.host": "127.0.0.1"}
    _start_context(SparkConf().setAll(options.items()), log_dir / "spark-jvm.log")
    spark = SparkSession.builder.config(map=options).getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


def class_archive(settings: Settings, java: str) -> Path:
    """The driver JVM's class archive (see jvm/cds.py): its classpath is pyspark's jars."""
    jars = sorted((Path(_find_spark_home()) / "jars").glob("*.jar"))
    return cds.archive_path(settings.cache_dir, "spark", java, jars)


def train_class_archive(settings: Settings) -> Path | None:
    """Start a driver that dumps its classes at exit, run what a stream's first batches run (rows
    from pandas through Arrow, JSON parsed, grouped, collected), stop it; the archive, if dumped."""
    java = java_binary()
    archive = class_archive(settings, java)
    if archive.is_file():
        return archive
    dump = cds.training_file(archive)
    spark = build_session(settings, "sensorstream-cds", jvm_options=cds.dump_options(dump))
    try:
        import pandas as pd
        from pyspark.sql import functions as F

        rows = pd.DataFrame({"key": ["a", "b"] * 50, "value": ['{"v": 1.5}', '{"v": 2}'] * 50})
        frame = spark.createDataFrame(rows).withColumn("v", F.from_json("value", "v double").v)
        frame.groupBy("key").agg(F.count("*"), F.avg("v")).toPandas()
    finally:
        spark.stop()
        begin_jvm_shutdown()
        wait_jvm(300)  # the dump is written as the JVM exits
    return archive if cds.finish_training(dump, archive) else None


def _start_context(conf: SparkConf, jvm_log: Path) -> None:
    """Start the SparkContext with its JVM in a new session (see the module's docstring)."""
    if SparkContext._gateway is not None:
        return  # PySpark keeps one JVM per process; getOrCreate reuses it, as it always did
    # The JVM's own stdout/stderr (start-up notes, a dying thread's trace) go to a file like the
    # rest of Spark's logs, not between our log lines.
    with open(jvm_log, "ab") as out:
        try:
            # PySpark's launch already makes the JVM ignore SIGINT; a new session keeps SIGTERM
            # (and SIGHUP from a closing terminal) sent to our group away from it as well.
            gateway = launch_gateway(
                conf, popen_kwargs={"start_new_session": True, "stdout": out, "stderr": subprocess.STDOUT}
            )
        except PySparkRuntimeError as exc:
            raise SparkStartError(
                f"the Spark JVM did not start; the end of {jvm_log}:\n{_tail(jvm_log)}"
            ) from exc
    # SparkContext replaces the SIGINT handler with one that raises KeyboardInterrupt wherever the
    # main thread is (inside a Py4J call, a DuckDB commit); keep the caller's handler instead.
    handler = signal.getsignal(signal.SIGINT)
    try:
        SparkContext(conf=conf, gateway=gateway)
    finally:
        if handler is not None:
            signal.signal(signal.SIGINT, handler)


def _tail(path: Path, lines: int = 15) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _jvm_process() -> subprocess.Popen | None:
    """The gateway JVM this process launched (``launch_gateway`` keeps it as ``proc``)."""
    return getattr(SparkContext._gateway, "proc", None)


class _Py4JSendFailures(logging.Filter):
    """Py4J logs failures to reach the JVM with their tracebacks (some through the *root* logger)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return f"{os.sep}py4j{os.sep}" not in record.pathname


def begin_jvm_shutdown() -> None:
    """Tell the JVM to exit (EOF on its stdin: System.exit, Spark's shutdown hooks, temp dirs
    removed) without waiting, so its shutdown overlaps ours. For a command about to exit."""
    proc = _jvm_process()
    if proc is not None and proc.stdin is not None and not proc.stdin.closed:
        quiet_py4j_failures()
        proc.stdin.close()


def quiet_py4j_failures() -> None:
    """From a stop on, a call into the JVM may find it gone or going: Spark's query thread can still
    hand one last (refused) batch to Python, whose wrapper calls back, and Py4J frees Java objects as
    Python collects them. Those failures are expected; their tracebacks are not news."""
    quiet = _Py4JSendFailures()
    for name in ("", "py4j.clientserver", "py4j.java_gateway"):  # filters apply per logger
        logger = logging.getLogger(name)
        if not any(isinstance(f, _Py4JSendFailures) for f in logger.filters):
            logger.addFilter(quiet)


def wait_jvm(timeout: float) -> bool:
    """Wait up to ``timeout`` s for the JVM to exit; False if it still runs (it ends by itself)."""
    proc = _jvm_process()
    if proc is None:
        return True
    try:
        proc.wait(max(0.0, timeout))
    except subprocess.TimeoutExpired:
        return False
    return True


def kill_jvm() -> None:
    """SIGKILL the JVM (a fast stop): its half-done batch is never committed, so it is replayed."""
    proc = _jvm_process()
    if proc is not None and proc.poll() is None:
        proc.kill()
