"""The SparkSession, built from settings: Kafka jars on the classpath, UTC, quiet logs.

Spark's own log4j output goes to ``<data_dir>/logs/spark.log``; our logs stay readable.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pyspark.sql import SparkSession

from sensorstream.config import Settings
from sensorstream.kafka.jars import ensure_jars, java_binary

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


def build_session(settings: Settings, app_name: str = "sensorstream") -> SparkSession:
    java_binary()  # fail early with a sentence rather than a Py4J stack trace
    # Python workers must use this interpreter (the venv has pyarrow; the system one may not).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    jars = ensure_jars(settings.cache_dir, "spark-kafka")
    log_dir = (Path(settings.data_dir) / "logs").resolve()
    log_dir.mkdir(parents=True, exist_ok=True)
    log_conf = log_dir / "spark-log4j2.properties"
    log_conf.write_text(LOG4J2.format(log=log_dir / "spark.log"))
    java_opts = f"-Dlog4j2.configurationFile=file:{log_conf} -Duser.timezone=UTC"
    local = on_this_machine(settings.spark_master)
    builder = (
        SparkSession.builder.appName(app_name)
        .master(settings.spark_master)
        .config("spark.jars", ",".join(str(j.resolve()) for j in jars))
        .config("spark.driver.extraJavaOptions", java_opts)
        # Executors elsewhere do not have the driver's log4j file; UTC matters everywhere.
        .config("spark.executor.extraJavaOptions", java_opts if local else "-Duser.timezone=UTC")
        .config("spark.driver.memory", settings.spark_driver_memory)
        .config("spark.sql.session.timeZone", "UTC")
        # 200 shuffle partitions made a 2-core run several times slower; size it to the machine.
        .config("spark.sql.shuffle.partitions", str(settings.shuffle_partitions))
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.adaptive.enabled", "false")
        # The job keeps no Spark state today (windows are merged in DuckDB, see sink/merge.py), but a
        # stateful operator added later should get RocksDB, not the default in-JVM-heap store.
        .config("spark.sql.streaming.stateStore.providerClass",
                "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider")
        .config("spark.sql.warehouse.dir", str((Path(settings.data_dir) / "spark-warehouse").resolve()))
    )  # fmt: skip
    if local:
        # Nothing outside this machine needs the driver. A remote cluster's executors must connect
        # back to it, so there Spark's own choice (or SPARK_LOCAL_IP / spark.driver.host) stands.
        builder = builder.config("spark.driver.bindAddress", "127.0.0.1").config(
            "spark.driver.host", "127.0.0.1"
        )
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark
