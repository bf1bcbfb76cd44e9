#!/usr/bin/env bash
# Beam Java expansion service for the Kafka transforms (ReadFromKafka / WriteToKafka),
# run from the cached library jars (scripts/stack/fetch_beam_java.sh), on loopback.
# Pass expansion_service="localhost:$EXPANSION_SERVICE_PORT" to ReadFromKafka/WriteToKafka.
#
# Usage: scripts/stack/expansion_service.sh start|stop|status|env|run
#   start   start in the background, wait until the port answers, print KEY=value
#   run     run in the foreground (exec), e.g. under a supervisor
# Env:
#   TSC_STACK_DIR           state + logs root (default <repo>/.stack); uses $TSC_STACK_DIR/expansion
#   EXPANSION_SERVICE_PORT  default 8097 if free, else a free port (fixed once chosen)
#   EXPANSION_ENV           environment of the Java transforms it expands:
#                             loopback: --alsoStartLoopbackWorker, i.e. EXTERNAL env served
#                                       by a Java SDK worker inside this JVM (FnApiRunner / local)
#                             external (default): same loopback worker, but also the *default* environment
#                                       (EXTERNAL localhost:PORT); needed for a local Flink cluster,
#                                       which otherwise picks DOCKER from AnyOf(DOCKER, EXTERNAL)
#                             embedded: --defaultEnvironmentType=EMBEDDED (runner runs Java in-process)
#                             process:  --defaultEnvironmentType=PROCESS, needs JAVA_BOOT (Beam's
#                                       Java container 'boot' binary)
#   JAVA_BOOT               path to the Java boot binary (EXPANSION_ENV=process)
#   EXPANSION_JAVA_OPTS     default "-Xmx1g"
#   EXPANSION_EXTRA_ARGS    appended verbatim (pipeline options of the expansion service)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=common.sh
. "$HERE/common.sh"
REPO="$(cd "$HERE/../.." && pwd)"
STACK_DIR="${TSC_STACK_DIR:-$REPO/.stack}"
EDIR="$STACK_DIR/expansion"
PIDFILE="$EDIR/expansion.pid"
LOG="$EDIR/expansion.log"
PORTFILE="$EDIR/port"
ENVFILE="$EDIR/expansion.env"
EXPANSION_ENV="${EXPANSION_ENV:-external}"
EXPANSION_JAVA_OPTS="${EXPANSION_JAVA_OPTS:--Xmx1g}"
START_TIMEOUT="${EXPANSION_START_TIMEOUT:-60}"

log() { echo "expansion_service.sh: $*" >&2; }

choose_port() {
  mkdir -p "$EDIR"
  if [[ -n "${EXPANSION_SERVICE_PORT:-}" ]]; then echo "$EXPANSION_SERVICE_PORT" > "$PORTFILE"
  elif [[ ! -f "$PORTFILE" ]] || ! port_free "$(cat "$PORTFILE")"; then free_port 8097 > "$PORTFILE"; fi
  cat "$PORTFILE"
}

java_cmd() {  # port
  local lib; lib="$("$HERE/fetch_beam_java.sh")"
  local -a env_args
  case "$EXPANSION_ENV" in
    loopback) env_args=(--alsoStartLoopbackWorker) ;;
    # The loopback worker is served on the expansion service's own port. Making it the default
    # environment (instead of AnyOf(DOCKER, EXTERNAL), which the Flink runner resolves to DOCKER)
    # lets a runner on the same host (local Flink) start Java workers inside this JVM.
    external) env_args=(--alsoStartLoopbackWorker --defaultEnvironmentType=EXTERNAL
                        "--defaultEnvironmentConfig=localhost:$1") ;;
    embedded) env_args=(--defaultEnvironmentType=EMBEDDED) ;;
    process)
      [[ -x "${JAVA_BOOT:-}" ]] || { log "EXPANSION_ENV=process needs JAVA_BOOT=<path to Java boot binary>"; return 1; }
      env_args=(--defaultEnvironmentType=PROCESS "--defaultEnvironmentConfig={\"command\": \"$JAVA_BOOT\"}") ;;
    *) log "unknown EXPANSION_ENV=$EXPANSION_ENV (loopback|external|embedded|process)"; return 1 ;;
  esac
  # shellcheck disable=SC2206
  CMD=(java $EXPANSION_JAVA_OPTS -cp "$lib/*" org.apache.beam.sdk.expansion.service.ExpansionService "$1"
       --javaClassLookupAllowlistFile='*' "${env_args[@]}")
  # shellcheck disable=SC2206
  [[ -z "${EXPANSION_EXTRA_ARGS:-}" ]] || CMD+=($EXPANSION_EXTRA_ARGS)
}

write_env() {
  printf 'EXPANSION_SERVICE_PORT=%s\nEXPANSION_SERVICE=localhost:%s\nEXPANSION_ENV=%s\n' \
    "$(cat "$PORTFILE")" "$(cat "$PORTFILE")" "$EXPANSION_ENV" > "$ENVFILE"
}

cmd_start() {
  if running; then log "already running (pid $(cat "$PIDFILE"))"; cat "$ENVFILE"; return 0; fi
  local port; port="$(choose_port)"
  port_free "$port" || { log "port $port in use"; return 1; }
  java_cmd "$port"
  log "starting on localhost:$port (env $EXPANSION_ENV), log $LOG"
  setsid "${CMD[@]}" >"$LOG" 2>&1 < /dev/null &
  echo $! > "$PIDFILE"
  local deadline=$((SECONDS + START_TIMEOUT))
  until ! port_free "$port"; do
    if ! running; then log "exited during startup:"; tail -n 30 "$LOG" >&2; rm -f "$PIDFILE"; return 1; fi
    (( SECONDS < deadline )) || { log "not listening after ${START_TIMEOUT}s"; cmd_stop; return 1; }
    sleep 0.5
  done
  write_env
  log "ready (pid $(cat "$PIDFILE"))"
  cat "$ENVFILE"
}

cmd_stop() {
  if ! running; then log "not running"; rm -f "$PIDFILE"; return 0; fi
  local pid; pid="$(cat "$PIDFILE")"
  kill -TERM "$pid"
  for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || { rm -f "$PIDFILE"; log "stopped"; return 0; }; sleep 0.5; done
  kill -KILL "$pid" 2>/dev/null || true; rm -f "$PIDFILE"; log "killed"
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) if running; then echo "expansion service: running pid $(cat "$PIDFILE") localhost:$(cat "$PORTFILE")"; else echo "expansion service: not running"; exit 1; fi ;;
  env) [[ -f "$ENVFILE" ]] && cat "$ENVFILE" || { log "not started"; exit 1; } ;;
  run) port="$(choose_port)"; java_cmd "$port"; exec "${CMD[@]}" ;;
  *) echo "usage: $0 start|stop|status|env|run" >&2; exit 2 ;;
esac
