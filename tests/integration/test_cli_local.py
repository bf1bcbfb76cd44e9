"""End to end: run_pipeline.py in local mode on good and poison lines, real HTTP service.

Every warehouse assertion runs against both backends: the embedded SQLite file and Impala
over HiveServer2 (testing.hs2_server, whose tables live in a SQLite file the test reads).
"""

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
from testing.hs2_server import HS2Server
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
def config_service(serve_configs):
    return serve_configs({(c['customerId'], c['tscId']): c for c in CATALOGUE})


class Warehouse:
    """One backend of the end-to-end test: its --warehouse URL and a way to read its tables."""

    def __init__(self, kind: str, url: str, database_path: Path, server: HS2Server | None = None):
        self.kind = kind
        self.url = url
        self.database_path = database_path
        self.server = server

    def connect(self) -> sqlite3.Connection:
        # Both backends keep their tables in a SQLite file: the embedded writer's own, or
        # the one behind the HS2 server (BOOLEAN as 0/1 there too; normalized by the reads).
        return sqlite3.connect(self.database_path)

    def write_statements(self) -> list[str]:
        assert self.server is not None
        return [s.statement for s in self.server.statements
                if s.success and s.statement.lstrip().upper().startswith(('UPSERT', 'DELETE'))]


def _create_tables(url: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / 'run_pipeline.py'), '--create_tables', '--warehouse', url],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture()
def impala_server(tmp_path):
    server = HS2Server(tmp_path / 'hs2.db')
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=['sqlite', 'impala'])
def warehouse(request, tmp_path):
    if request.param == 'sqlite':
        return Warehouse('sqlite', f'sqlite:///{tmp_path / "wh.db"}', tmp_path / 'wh.db')
    server = request.getfixturevalue('impala_server')
    # The server knows database 'default' (and strips it where it qualifies a table).
    url = f'impala://127.0.0.1:{server.port}/default'
    created = _create_tables(url)
    assert created.returncode == 0, created.stdout + created.stderr[-3000:]
    return Warehouse('impala', url, Path(server.database_path), server)


def _run(tmp_path: Path, url: str, input_path: Path, warehouse_url: str,
         *extra: str) -> subprocess.CompletedProcess:
    command = [
        sys.executable, str(ROOT / 'run_pipeline.py'),
        '--input', str(input_path), '--tsc_config_url', url,
        '--warehouse', warehouse_url,
        '--jobs_out', str(tmp_path / 'jobs.jsonl'),
        '--dead_letter_out', str(tmp_path / 'dead.jsonl'),
        '--job_image', 'registry.example.com/tsc-runner:1.0',
        '--tsc_config_backoff_seconds', '0.01', '--max_message_bytes', '4096',
        '--batch_size', '100', *extra,
    ]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          check=False)


def _records(path: Path):
    return [record_from_json(line) for line in path.read_text(encoding='utf-8').splitlines()]


def test_local_mode_end_to_end(tmp_path, config_service, warehouse):
    lines = [g.encode() for g in GOOD] + [p for p, _ in POISON]
    input_path = tmp_path / 'messages.jsonl'
    input_path.write_bytes(b'\n'.join(lines) + b'\n')
    poison_offsets = {len(GOOD) + i: stage for i, (_, stage) in enumerate(POISON)}

    completed = _run(tmp_path, config_service, input_path, warehouse.url)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert f'records read:      {len(lines)}' in completed.stdout

    database = warehouse.connect()
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

    rows = {(c, t): (cron, int(enabled), offset)  # BOOLEAN: 0/1 in both files
            for c, t, cron, enabled, offset in database.execute(
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

    if warehouse.server is not None:
        # The rows went over the HS2 wire, as batched multi-row statements.
        statements = warehouse.write_statements()
        assert statements and all(s.startswith(('UPSERT INTO default.', 'DELETE FROM default.'))
                                  for s in statements)
        assert not any(s.error for s in warehouse.server.statements
                       if s.statement.startswith(('UPSERT', 'DELETE')))

    # A rerun of the same file adds no archive rows and leaves the state as it was.
    again = _run(tmp_path, config_service, input_path, warehouse.url)
    assert again.returncode == 0, again.stderr[-3000:]
    assert database.execute('SELECT COUNT(*) FROM processed_data').fetchone()[0] == len(GOOD)
    assert database.execute('SELECT COUNT(*) FROM tsc_configurations').fetchone()[0] == 3


def test_impala_statements_per_1000_messages(tmp_path, impala_server):
    keys = [(f'cust-{k % 10}', f'tsc-{k}') for k in range(50)]
    catalogue = {key: {'customerId': key[0], 'tscId': key[1], 'frequency': 'hourly'}
                 for key in keys}
    lines = []
    for i in range(1000):
        customer, tsc = keys[i % len(keys)]
        operation = 'create' if i < len(keys) else ('delete' if i % 97 == 0 else 'update')
        lines.append(_line(operation, customer, tsc, seq=i))
    input_path = tmp_path / 'messages.jsonl'
    input_path.write_text('\n'.join(lines) + '\n', encoding='utf-8')
    expected_rows = {key for key in keys
                     if json.loads(lines[max(i for i in range(1000) if keys[i % 50] == key)])
                     ['operation'] != 'delete'}

    url = f'impala://127.0.0.1:{impala_server.port}/default'
    created = _create_tables(url)
    assert created.returncode == 0, created.stdout + created.stderr[-3000:]
    server = ConfigServer(('127.0.0.1', 0), catalogue)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        impala_server.clear_statements()
        completed = _run(tmp_path, f'http://127.0.0.1:{server.server_address[1]}', input_path,
                         url, '--batch_size', '500', '--num_shards', '2')
    finally:
        server.shutdown()
        server.server_close()
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert 'records read:      1000' in completed.stdout
    assert 'processed:         1000' in completed.stdout
    assert 'dead letters:      0' in completed.stdout

    warehouse = Warehouse('impala', url, Path(impala_server.database_path), impala_server)
    writes = warehouse.write_statements()
    everything = impala_server.statements
    reads = [s for s in everything if s.statement.startswith('SELECT')]
    per_1000 = len(writes) * 1000 / len(lines)
    print(f'\nimpala: {len(lines)} messages over {len(keys)} keys -> {len(writes)} write '
          f'statements ({per_1000:.1f} per 1,000 messages: '
          f'{sum(s.startswith("UPSERT") for s in writes)} UPSERT, '
          f'{sum(s.startswith("DELETE") for s in writes)} DELETE), {len(reads)} SELECT, '
          f'{len(everything)} statements in all incl. USE')
    assert per_1000 <= 10
    assert all(s.success for s in everything)
    assert f'SQL statements:    {len(writes) + len(reads)}' in completed.stdout

    database = warehouse.connect()
    assert database.execute('SELECT COUNT(*) FROM processed_data').fetchone()[0] == 1000
    assert set(database.execute('SELECT customer_id, tsc_id FROM tsc_configurations')) \
        == expected_rows


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
