"""Smoke test of the benchmark harness: tiny N, one repeat; no timing is asserted."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_bench_harness_runs_and_verifies_every_contender(tmp_path):
    out = tmp_path / 'results'
    completed = subprocess.run(
        [sys.executable, '-m', 'bench.run', '--n', '300', '--keys', '30', '--latency_ms', '1',
         '--sql_latency_ms', '1', '--repeats', '1', '--seed_messages', '120',
         '--sweep_batch_sizes', '50', '--sweep_num_shards', '', '--sweep_concurrency', '',
         '--rss_scale', '2', '--modes', 'in_memory,multi_processing', '--out', str(out),
         '--workdir', str(tmp_path / 'work')],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert 'all outputs verified' in completed.stdout

    with open(out / 'latest.csv', newline='', encoding='utf-8') as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == [
            'contender', 'messages', 'seconds', 'messages_per_s', 'ratio_to_seed',
            'ratio_to_passthrough', 'rest_per_1000', 'sql_per_1000', 'p50_ms', 'p99_ms',
            'peak_rss_mb']
        rows = {row['contender']: row for row in reader}
    assert {'seed_baseline', 'pipeline_local', 'pipeline_local[in_memory]',
            'pipeline_local[multi_processing]', 'passthrough', 'passthrough[in_memory]',
            'passthrough[multi_processing]', 'pipeline_local@2xN'} <= set(rows)
    assert rows['seed_baseline']['messages'] == '120'
    assert rows['pipeline_local']['messages'] == '300'
    assert rows['pipeline_local@2xN']['messages'] == '600'
    for row in rows.values():
        assert float(row['messages_per_s']) > 0 and float(row['peak_rss_mb']) > 0
    # The seed does one GET per message that needs a configuration; the pipeline fewer.
    assert float(rows['pipeline_local']['rest_per_1000']) < float(
        rows['seed_baseline']['rest_per_1000'])
    assert rows['seed_baseline']['p50_ms'] and not rows['pipeline_local']['p50_ms']

    runs = json.loads((out / 'runs.json').read_text())['runs']
    assert runs and all(run['verified'] for run in runs)
    try:
        import matplotlib  # noqa: F401 - installed by `make bench` (requirements-bench.txt)
    except ImportError:
        pass
    else:
        assert (out / 'throughput.png').stat().st_size > 1000
    assert (out / 'sweep.csv').exists()
