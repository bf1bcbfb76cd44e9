#!/usr/bin/env bash
# Assemble Beam's Java Kafka expansion service (library jars, not the shaded
# beam-sdks-java-io-expansion-service, which Maven Central here does not serve past 2.43)
# from Maven Central into a cache outside the repo. Idempotent.
#
# Usage: scripts/stack/fetch_beam_java.sh           # prints the lib dir on stdout
# Env:   TSC_CACHE            cache root (default $HOME/.cache/tsc-orchestrator)
#        BEAM_VERSION         default: the apache-beam version installed in <repo>/.venv, else 2.73.0
#        KAFKA_CLIENTS_VERSION  kafka-clients for the Java IO (default 3.9.1; KafkaIO declares it
#                             'provided', Beam compiles against 2.4.1)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=common.sh
. "$HERE/common.sh"
REPO="$(cd "$HERE/../.." && pwd)"
if [[ -z "${BEAM_VERSION:-}" ]]; then
  BEAM_VERSION="$("$REPO/.venv/bin/python" -c 'import apache_beam; print(apache_beam.__version__)' 2>/dev/null || echo 2.73.0)"
fi
KAFKA_CLIENTS_VERSION="${KAFKA_CLIENTS_VERSION:-3.9.1}"
TSC_CACHE="${TSC_CACHE:-$HOME/.cache/tsc-orchestrator}"
DEST="$TSC_CACHE/beam-java-$BEAM_VERSION-kafka-$KAFKA_CLIENTS_VERSION"
LIB="$DEST/lib"
STAMP="$DEST/.complete"

if [[ -f "$STAMP" ]]; then echo "$LIB"; exit 0; fi
command -v mvn >/dev/null || { echo "fetch_beam_java: mvn not found" >&2; exit 1; }
mkdir -p "$DEST"
rm -rf "$LIB.tmp"

dep() { echo "    <dependency><groupId>$1</groupId><artifactId>$2</artifactId><version>$3</version></dependency>"; }
{
  cat <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.tsc</groupId>
  <artifactId>beam-java-fetch</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
POM
  dep org.apache.beam beam-sdks-java-expansion-service "$BEAM_VERSION"   # ExpansionService main
  # KafkaIO + its registrar. Its io.confluent deps (schema registry) come only from
  # packages.confluent.io, which is unreachable here: excluded (only needed for
  # Confluent Schema Registry deserializers).
  cat <<POM
    <dependency><groupId>org.apache.beam</groupId><artifactId>beam-sdks-java-io-kafka</artifactId><version>$BEAM_VERSION</version>
      <exclusions><exclusion><groupId>io.confluent</groupId><artifactId>*</artifactId></exclusion></exclusions>
    </dependency>
POM
  dep org.apache.beam beam-sdks-java-harness "$BEAM_VERSION"             # loopback / EMBEDDED worker
  dep com.github.jbellis jamm 0.4.0   # 'provided' in the harness pom, needed at runtime (Caches)
  dep org.apache.kafka kafka-clients "$KAFKA_CLIENTS_VERSION"
  dep org.slf4j slf4j-jdk14 2.0.16
  cat <<POM
  </dependencies>
</project>
POM
} > "$DEST/pom.xml"

resolve_into_lib "Beam $BEAM_VERSION Kafka expansion service"
