"""The JVM's side of the pipeline: which ``java`` runs, and the jars on its classpath.

Kafka has no Debian or PyPI package, so the broker runs from the ``kafka_2.13`` jars, and Spark
reads Kafka through a connector pyspark does not ship. Maven resolves each POM under ``maven/``
(or one a caller names) and copies the jars into ``<cache_dir>/jars/<name>`` (git-ignored). A
marker file makes the step idempotent: a second ``make run`` costs nothing.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

log = logging.getLogger(__name__)

POM_DIR = Path(__file__).parent / "maven"

# Only what pyspark does not already ship: Spark's connector, its token provider, and the
# kafka-clients / commons-pool2 versions the connector's POM names (commons-pool2 2.11 fails).
_INCLUDE = {
    "spark-kafka": "spark-sql-kafka-0-10_2.13,spark-token-provider-kafka-0-10_2.13,kafka-clients,commons-pool2",
}


class JavaMissingError(RuntimeError):
    pass


class JarsError(RuntimeError):
    """The Kafka or Spark jars could not be fetched (no Maven, Maven failed) or are missing."""


def java_binary() -> str:
    """The ``java`` to run, with a sentence that tells the user what to do if there is none."""
    import os

    home = os.environ.get("JAVA_HOME")
    candidate = Path(home) / "bin" / "java" if home else None
    if candidate and candidate.exists():
        return str(candidate)
    found = shutil.which("java")
    if not found:
        raise JavaMissingError(
            "Java 17 or newer is needed to run Kafka and Spark, and no `java` is on PATH. "
            "Install a JDK (e.g. `apt-get install openjdk-17-jre-headless`) or set JAVA_HOME."
        )
    return found


def jar_dir(cache_dir: Path, name: str) -> Path:
    return Path(cache_dir) / "jars" / name


def ensure_jars(cache_dir: Path, name: str, pom: Path | None = None) -> list[Path]:
    """The jars for ``name`` ("kafka" or "spark-kafka", or the POM ``pom`` names), fetched with Maven
    on first use."""
    target = jar_dir(cache_dir, name)
    marker = target / ".complete"
    if not marker.exists():
        mvn = shutil.which("mvn")
        if not mvn:
            raise JarsError(
                f"Maven (`mvn`) is needed once to fetch the {name} jars into {target}, and it is not "
                "on PATH. Install it (e.g. `apt-get install maven`) and run `make deps` again."
            )
        target.mkdir(parents=True, exist_ok=True)
        cmd = [
            mvn, "-q", "-B", "-f", str(pom or POM_DIR / name / "pom.xml"),
            "dependency:copy-dependencies", "-DincludeScope=runtime", f"-DoutputDirectory={target.resolve()}",
        ]  # fmt: skip
        if _INCLUDE.get(name):
            cmd.append(f"-DincludeArtifactIds={_INCLUDE[name]}")
        log.info("fetching %s jars with Maven into %s", name, target)
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise JarsError(
                f"Maven could not fetch the {name} jars:\n{result.stdout[-3000:]}{result.stderr[-2000:]}"
            )
        marker.write_text("ok\n")
    jars = sorted(target.glob("*.jar"))
    if not jars:
        raise JarsError(f"no jars in {target}; delete it and run `make deps` again")
    return jars
