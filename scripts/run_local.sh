#!/usr/bin/env bash
# Runs the orchestrator on examples/ with the sample config service, on embedded defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-out}
py=.venv/bin/python
mkdir -p "$out"
rm -f "$out/orchestrator.db" "$out/orchestrator.db-wal" "$out/orchestrator.db-shm"

log="$out/sample_config_server.log"
"$py" -m pipeline.sample_config_server --port 0 --catalogue examples/tsc_configs.json >"$log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  grep -q '^listening on ' "$log" 2>/dev/null && break
  sleep 0.1
done
address=$(sed -n 's/^listening on //p' "$log" | head -1)
[ -n "$address" ] || { echo "sample config service did not start:"; cat "$log"; exit 1; }
echo "sample config service on http://$address"

"$py" run_pipeline.py \
  --input examples/messages.jsonl \
  --tsc_config_url "http://$address" \
  --warehouse "sqlite:///$out/orchestrator.db" \
  --jobs_out "$out/jobs.jsonl" \
  --dead_letter_out "$out/dead_letters.jsonl" \
  --job_image registry.example.com/tsc-runner:1.0 \
  --tsc_config_backoff_seconds 0.05 \
  --log_level WARNING
