#!/usr/bin/env bash
# Stops everything scripts/stack/up.sh started (state and logs stay in $TSC_STACK_DIR).
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
export TSC_STACK_DIR="${TSC_STACK_DIR:-$REPO/.stack}"
CDIR="$TSC_STACK_DIR/config-service"
if [[ -f "$CDIR/pid" ]]; then
  kill "$(cat "$CDIR/pid")" 2>/dev/null || true
  rm -f "$CDIR/pid" "$CDIR/env"
fi
"$HERE/expansion_service.sh" stop || true
"$HERE/kafka.sh" stop || true
rm -f "$TSC_STACK_DIR/stack.env"
