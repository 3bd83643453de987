"""``make deps``' last step: train the broker's and the Spark driver's class archives (see
``jvm/cds.py``), each in a throw-away data dir; a no-op for an archive already trained for this JVM
and these jars. Run as ``python -m sensorstream.tools.cds_training [CACHE_DIR]``."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path


def train(cache_dir: Path) -> list[Path | None]:
    from sensorstream.config import load_settings
    from sensorstream.kafka.broker import train_class_archive as train_broker
    from sensorstream.stream.spark import train_class_archive as train_driver
    from sensorstream.tools.ports import free_block

    with tempfile.TemporaryDirectory(prefix="sensorstream-cds-") as tmp:
        settings = load_settings(data_dir=Path(tmp) / "spark", cache_dir=cache_dir, spark_master="local[2]")
        return [train_broker(cache_dir, Path(tmp) / "kafka", free_block(2)), train_driver(settings)]


if __name__ == "__main__":
    for archive in train(Path(sys.argv[1] if len(sys.argv) > 1 else ".cache")):
        print(f"class archive: {archive or 'not dumped (the JVMs start without one)'}")
