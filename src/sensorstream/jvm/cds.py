"""Class-data sharing: the classes a Kafka broker or a Spark driver loads at start, parsed and
verified once into an archive the next JVM maps instead of loading them again.

A JVM start spends most of its CPU loading, verifying and compiling classes (Spark's driver loads
~10,000): a Spark session with a stream's first query costs ~14 s of CPU without the archive and
~10 s with it, and starts in 60% of the time. ``make deps`` trains each archive once (a JVM doing
a representative first start, dumping at its exit with ``-XX:ArchiveClassesAtExit``) into
``<cache_dir>/cds``; the file's name is a hash of the JVM and the classpath, so another JDK or
other jars get an archive of their own, never a stale one (a mismatched archive is refused by the
JVM anyway, with a warning, and costs only its benefit). Without an archive a JVM starts as before.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path


def archive_path(cache_dir: Path, name: str, java: str, classpath: Iterable[Path]) -> Path:
    """Where the archive of ``name`` (``kafka``, ``spark``) for this JVM and classpath lives."""
    digest = hashlib.sha256()
    jvm = Path(os.path.realpath(java))
    # The JVM itself (its launcher and libjvm) and each jar, by path, size and modification time.
    for path in (jvm, jvm.parents[1] / "lib" / "server" / "libjvm.so", *classpath):
        try:
            st = path.stat()
        except OSError:
            continue
        digest.update(f"{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return Path(cache_dir).resolve() / "cds" / f"{name}-{digest.hexdigest()[:16]}.jsa"


def use_options(archive: Path) -> list[str]:
    """The JVM options that map ``archive``, if it was trained (none otherwise: naming a missing
    archive would turn off the JDK's own default sharing too)."""
    return [f"-XX:SharedArchiveFile={archive}"] if archive.is_file() else []


def training_file(archive: Path) -> Path:
    """Where a training JVM dumps (moved into place by :func:`finish_training` once it exited)."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    return archive.with_name(f"{archive.name}.{os.getpid()}.tmp")


def dump_options(dump: Path) -> list[str]:
    return [f"-XX:ArchiveClassesAtExit={dump}"]


def finish_training(dump: Path, archive: Path) -> bool:
    """Move a complete dump into place (atomic: a JVM never maps a half-written archive)."""
    if not dump.is_file() or dump.stat().st_size == 0:
        dump.unlink(missing_ok=True)
        return False
    dump.replace(archive)
    return True
