#!/usr/bin/env bash
# Starts the local stack on loopback: Kafka (KRaft) with the three topics, the Beam Java
# expansion service with KafkaIO, and the sample TSC configuration service. Writes every
# endpoint as KEY=value to $TSC_STACK_DIR/stack.env. Idempotent: running parts are kept.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
export TSC_STACK_DIR="${TSC_STACK_DIR:-$REPO/.stack}"
PY="${PYTHON:-$REPO/.venv/bin/python}"
mkdir -p "$TSC_STACK_DIR/config-service"

"$HERE/kafka.sh" start >/dev/null
"$HERE/kafka.sh" create-topics >/dev/null
"$HERE/expansion_service.sh" start >/dev/null

CDIR="$TSC_STACK_DIR/config-service"
if ! { [[ -f "$CDIR/pid" ]] && kill -0 "$(cat "$CDIR/pid")" 2>/dev/null; }; then
  : > "$CDIR/log"
  (cd "$REPO" && exec "$PY" -m pipeline.sample_config_server --port "${CONFIG_SERVICE_PORT:-0}" \
      --catalogue "${CONFIG_CATALOGUE:-examples/tsc_configs.json}" \
      --latency_ms "${CONFIG_LATENCY_MS:-0}") >"$CDIR/log" 2>&1 &
  echo $! > "$CDIR/pid"
  for _ in $(seq 100); do grep -q '^listening on ' "$CDIR/log" && break; sleep 0.1; done
  grep -q '^listening on ' "$CDIR/log" || { echo "config service did not start" >&2; cat "$CDIR/log" >&2; exit 1; }
  sed -n 's/^listening on /TSC_CONFIG_URL=http:\/\//p' "$CDIR/log" | head -1 > "$CDIR/env"
fi

{
  "$HERE/kafka.sh" env
  "$HERE/expansion_service.sh" env
  cat "$CDIR/env"
} | sed -e 's/^DLQ_TOPIC=/DEAD_LETTER_TOPIC=/' -e 's/^EXPANSION_SERVICE=/KAFKA_EXPANSION_SERVICE=/' > "$TSC_STACK_DIR/stack.env"
echo "stack up; endpoints in $TSC_STACK_DIR/stack.env:" >&2
cat "$TSC_STACK_DIR/stack.env"
