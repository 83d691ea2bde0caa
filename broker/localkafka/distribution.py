"""Where the Kafka jars come from: ``KAFKA_HOME``, or Maven Central through deploy/kafka/pom.xml.

Fetched jars land in ``<cache>/kafka-<version>/libs`` and are reused on every later run;
a ``.complete`` marker is written last so an interrupted download is never mistaken for
a usable one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from broker.errors import KafkaDownloadError, ToolNotFoundError
from broker.settings import Settings

_REPO_ROOT = Path(__file__).resolve().parents[2]
POM_PATH = _REPO_ROOT / "deploy" / "kafka" / "pom.xml"
_COMPLETE_MARKER = ".complete"


@dataclass(frozen=True)
class KafkaDistribution:
    """A folder of jars that together run ``kafka.Kafka`` and ``kafka.tools.StorageTool``."""

    version: str
    libs_dir: Path
    source: str  # "KAFKA_HOME" or "maven"

    @property
    def classpath(self) -> str:
        return str(self.libs_dir / "*")


def find_java() -> str:
    """Path of the java launcher (JAVA_HOME first, then PATH)."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        candidate = Path(java_home) / "bin" / "java"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("java")
    if found is None:
        raise ToolNotFoundError(
            "Java was not found (no JAVA_HOME, no `java` on PATH); the local Kafka broker needs it",
            hint="install a Java 17+ runtime, e.g. `apt-get install openjdk-17-jre-headless`",
        )
    return found


def _find_maven() -> str:
    found = shutil.which("mvn")
    if found is None:
        raise ToolNotFoundError(
            "Maven (`mvn`) was not found on PATH; it is needed once to fetch Kafka's jars",
            hint="install it (`apt-get install maven`) or point KAFKA_HOME at an existing Kafka",
        )
    return found


def _from_kafka_home(kafka_home: Path) -> KafkaDistribution:
    libs = kafka_home / "libs"
    jars = sorted(libs.glob("kafka_2.13-*.jar")) if libs.is_dir() else []
    server_jars = [j for j in jars if not j.name.endswith(("-sources.jar", "-javadoc.jar"))]
    if not server_jars:
        raise ToolNotFoundError(
            f"KAFKA_HOME={kafka_home} does not look like a Kafka installation "
            f"(expected {libs}/kafka_2.13-<version>.jar)",
            hint="unset KAFKA_HOME to fetch Kafka from Maven Central instead",
        )
    version = server_jars[0].name.removeprefix("kafka_2.13-").removesuffix(".jar")
    return KafkaDistribution(version=version, libs_dir=libs, source="KAFKA_HOME")


def fetch_from_maven(version: str, cache_dir: Path, pom: Path = POM_PATH) -> KafkaDistribution:
    """Resolve Kafka ``version`` and its runtime dependencies into the cache (once)."""
    target = cache_dir / f"kafka-{version}"
    libs = target / "libs"
    if (target / _COMPLETE_MARKER).is_file():
        return KafkaDistribution(version=version, libs_dir=libs, source="maven")
    if not pom.is_file():
        raise KafkaDownloadError(
            f"{pom} is missing, so Kafka cannot be fetched",
            hint="run from a checkout of the project, or set KAFKA_HOME",
        )
    find_java()  # fail early, with the Java hint, before a long download
    mvn = _find_maven()
    target.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="libs-", dir=target))
    cmd = [
        mvn,
        "-B",
        "-q",
        "-f",
        str(pom),
        f"-Dkafka.version={version}",
        "dependency:copy-dependencies",
        f"-DoutputDirectory={staging}",
    ]
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    except subprocess.TimeoutExpired as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise KafkaDownloadError(
            f"fetching Kafka {version} from Maven Central took more than 15 minutes"
        ) from exc
    server_jar = staging / f"kafka_2.13-{version}.jar"
    if result.returncode != 0 or not server_jar.is_file():
        shutil.rmtree(staging, ignore_errors=True)
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise KafkaDownloadError(
            f"Maven could not fetch Kafka {version} (exit {result.returncode}):\n{tail}",
            hint="check network access to Maven Central and that the version exists",
        )
    if libs.exists():
        shutil.rmtree(libs)
    staging.rename(libs)
    (target / _COMPLETE_MARKER).write_text(version + "\n", encoding="utf-8")
    return KafkaDistribution(version=version, libs_dir=libs, source="maven")


def resolve_distribution(settings: Settings) -> KafkaDistribution:
    """KAFKA_HOME when set, otherwise the cached (or freshly fetched) Maven Central jars."""
    if settings.kafka_home is not None:
        return _from_kafka_home(settings.kafka_home)
    return fetch_from_maven(settings.kafka_version, settings.cache_dir)
