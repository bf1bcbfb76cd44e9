#!/usr/bin/env bash
# Fetch an Apache Kafka broker (KRaft) as plain jars from Maven Central into a cache
# outside the repo. Idempotent: does nothing when the lib dir is already complete.
#
# Usage: scripts/stack/fetch_kafka.sh            # prints the lib dir on stdout
# Env:   TSC_CACHE      cache root (default $HOME/.cache/tsc-orchestrator)
#        KAFKA_VERSION  org.apache.kafka:kafka_2.13 version (default 4.1.2)
set -euo pipefail
# shellcheck source=common.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/common.sh"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

KAFKA_VERSION="${KAFKA_VERSION:-4.1.2}"
TSC_CACHE="${TSC_CACHE:-$HOME/.cache/tsc-orchestrator}"
DEST="$TSC_CACHE/kafka-$KAFKA_VERSION"
LIB="$DEST/lib"
STAMP="$DEST/.complete"

if [[ -f "$STAMP" ]]; then
  echo "$LIB"
  exit 0
fi

command -v mvn >/dev/null || { echo "fetch_kafka: mvn not found" >&2; exit 1; }
mkdir -p "$DEST"
rm -rf "$LIB.tmp"

# Throwaway pom: the broker (kafka_2.13, which carries kafka.Kafka and kafka.tools.StorageTool),
# the command-line tools (TopicCommand etc. live in kafka-tools) and a log4j2 backend.
cat > "$DEST/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.tsc</groupId>
  <artifactId>kafka-fetch</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>2.24.3</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>2.24.3</version></dependency>
  </dependencies>
</project>
POM

resolve_into_lib "kafka_2.13:$KAFKA_VERSION + deps"
