"""End to end: run_pipeline.py in local mode on good and poison lines, against a real HTTP service."""

from __future__ import annotations

import collections
import json
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from pipeline.sample_config_server import ConfigServer
from transforms.cronjob_builder import cronjob_name
from transforms.local_io import record_from_json

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
K8S_VERSION = '1.33'

CATALOGUE = [
    {'customerId': 'acme', 'tscId': 'nightly', 'frequency': 'daily at 02:30',
     'timezone': 'Europe/Rome', 'namespace': 'acme-jobs', 'parameters': {'format': 'pdf'}},
    {'customerId': 'acme', 'tscId': 'sync', 'frequency': 'every 15 minutes', 'enabled': False},
    {'customerId': "x'; DROP TABLE tsc_configurations; --", 'tscId': '../../etc/passwd',
     'frequency': 'hourly'},
    {'customerId': 'globex', 'tscId': 'bad', 'frequency': 'every 7 minutes'},
]


def _line(operation, customer, tsc, **extra):
    return json.dumps({'operation': operation, 'customerId': customer, 'tscId': tsc, **extra})


GOOD = [
    _line('create', 'acme', 'nightly'),
    _line('CREATE', 'acme', 'sync'),
    _line('update', 'acme', 'sync', note='second'),
    _line('create', "x'; DROP TABLE tsc_configurations; --", '../../etc/passwd'),
    _line('delete', 'acme', 'nightly'),
    _line('create', 'acme', 'nightly'),
]
# (line, dead-letter stage)
POISON = [
    (b'{"operation": "create", "customerId": "acme"', 'parse'),          # invalid JSON
    (b'["create", "acme", "nightly"]', 'parse'),                         # a JSON array
    (_line('create', '', 'x').encode(), 'parse'),                        # empty id
    (b'{"operation": "create", "tscId": "x"}', 'parse'),                 # missing id
    (b'{"operation": "create", "customerId": 7, "tscId": "x"}', 'parse'),  # non-string id
    (_line('archive', 'acme', 'nightly').encode(), 'parse'),             # unknown operation
    (b'{"operation": "create", "customerId": "\xff\xfe", "tscId": "x"}', 'parse'),  # not UTF-8
    (_line('create', 'acme', 'big', pad='x' * 5000).encode(), 'parse'),  # over --max_message_bytes
    (_line('create', 'nobody', 'missing').encode(), 'enrich'),           # 404
    (_line('create', 'globex', 'bad').encode(), 'validate'),             # bad frequency
]


@pytest.fixture()
def config_service():
    server = ConfigServer(('127.0.0.1', 0), {(c['customerId'], c['tscId']): c for c in CATALOGUE})
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f'http://127.0.0.1:{server.server_address[1]}'
    finally:
        server.shutdown()
        server.server_close()


def _run(tmp_path: Path, url: str, input_path: Path) -> subprocess.CompletedProcess:
    command = [
        sys.executable, str(ROOT / 'run_pipeline.py'),
        '--input', str(input_path), '--tsc_config_url', url,
        '--warehouse', f'sqlite:///{tmp_path / "wh.db"}',
        '--jobs_out', str(tmp_path / 'jobs.jsonl'),
        '--dead_letter_out', str(tmp_path / 'dead.jsonl'),
        '--job_image', 'registry.example.com/tsc-runner:1.0',
        '--tsc_config_backoff_seconds', '0.01', '--max_message_bytes', '4096',
        '--batch_size', '100',
    ]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          check=False)


def _records(path: Path):
    return [record_from_json(line) for line in path.read_text(encoding='utf-8').splitlines()]


def test_local_mode_end_to_end(tmp_path, config_service):
    lines = [g.encode() for g in GOOD] + [p for p, _ in POISON]
    input_path = tmp_path / 'messages.jsonl'
    input_path.write_bytes(b'\n'.join(lines) + b'\n')
    poison_offsets = {len(GOOD) + i: stage for i, (_, stage) in enumerate(POISON)}

    completed = _run(tmp_path, config_service, input_path)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert f'records read:      {len(lines)}' in completed.stdout

    database = sqlite3.connect(tmp_path / 'wh.db')
    processed = database.execute(
        'SELECT source_offset, payload FROM processed_data').fetchall()
    dead = _records(tmp_path / 'dead.jsonl')
    dead_offsets = [int(d.header('dlq.source.offset')) for d in dead]

    # The invariant: every record is exactly one processed row or exactly one dead letter.
    assert sorted([offset for offset, _ in processed] + dead_offsets) == list(range(len(lines)))
    assert {offset for offset, _ in processed} == set(range(len(GOOD)))
    assert {int(d.header('dlq.source.offset')): d.header('dlq.stage').decode()
            for d in dead} == poison_offsets
    for offset, payload in processed:
        assert payload == GOOD[offset]

    for record in dead:
        offset = int(record.header('dlq.source.offset'))
        assert record.value == lines[offset]  # original bytes, untouched
        assert record.header('dlq.source.topic') == str(input_path).encode()
        assert record.header('dlq.source.partition') == b'0'
        assert record.header('dlq.error.class') and record.header('dlq.error.message')
        assert record.header('dlq.failed.at')
    by_stage = collections.Counter(d.header('dlq.stage').decode() for d in dead)
    assert by_stage == collections.Counter(stage for _, stage in POISON)
    enrich = [d for d in dead if d.header('dlq.stage') == b'enrich']
    assert enrich[0].header('dlq.attempts') == b'1'  # 404 is not retried

    rows = {(c, t): (cron, enabled, offset) for c, t, cron, enabled, offset in database.execute(
        'SELECT customer_id, tsc_id, cron_schedule, enabled, source_offset '
        'FROM tsc_configurations')}
    assert rows == {
        ('acme', 'nightly'): ('30 2 * * *', 1, 5),        # delete at 4, re-created at 5
        ('acme', 'sync'): ('*/15 * * * *', 0, 2),         # the update (offset 2) wins
        ("x'; DROP TABLE tsc_configurations; --", '../../etc/passwd'): ('0 * * * *', 1, 3),
    }

    jobs = _records(tmp_path / 'jobs.jsonl')
    latest = {}
    for job in jobs:
        manifest = yaml.safe_load(job.value)
        kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)
        name = manifest['metadata']['name']
        assert len(name) <= 52
        assert job.key.decode() == f'{manifest["metadata"]["namespace"]}/{name}'
        customer, tsc = job.header('customerId').decode(), job.header('tscId').decode()
        assert name == cronjob_name(customer, tsc)
        assert job.header('action') in (b'apply', b'delete')
        latest[(customer, tsc)] = (job.header('action'), manifest)
    # One job record per key: a batch collapses a key's messages into the latest.
    assert len(jobs) == len(latest) == 3
    action, nightly = latest[('acme', 'nightly')]
    assert action == b'apply'
    assert nightly['metadata']['namespace'] == 'acme-jobs'
    assert nightly['spec']['timeZone'] == 'Europe/Rome'
    env = {e['name']: e['value'] for e in
           nightly['spec']['jobTemplate']['spec']['template']['spec']['containers'][0]['env']}
    assert json.loads(env['TSC_PARAMETERS']) == {'format': 'pdf'}
    assert latest[('acme', 'sync')][1]['spec']['suspend'] is True

    # A rerun of the same file adds no archive rows and leaves the state as it was.
    again = _run(tmp_path, config_service, input_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert database.execute('SELECT COUNT(*) FROM processed_data').fetchone()[0] == len(GOOD)
    assert database.execute('SELECT COUNT(*) FROM tsc_configurations').fetchone()[0] == 3


def test_bad_configuration_fails_before_running(tmp_path):
    input_path = tmp_path / 'messages.jsonl'
    input_path.write_text(GOOD[0] + '\n')
    completed = subprocess.run(
        [sys.executable, str(ROOT / 'run_pipeline.py'), '--input', str(input_path),
         '--tsc_config_url', 'http://user:secret@127.0.0.1:1', '--job_image', 'x'],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert completed.returncode == 2
    assert 'must not carry credentials' in completed.stdout
    assert 'secret' not in completed.stdout + completed.stderr
