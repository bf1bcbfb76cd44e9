"""End to end in Kafka mode: a real KRaft broker, Beam's Java KafkaIO, the pipeline, restarts.

The stack comes from the project's own scripts (scripts/stack/up.sh) in a private state
directory with its own topics; every process is stopped afterwards, also on failure.
"""

from __future__ import annotations

import collections
import json
import os
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from testing.hs2_server import HS2Server
from transforms.cronjob_builder import cronjob_name

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PARTITIONS = 4
CUSTOMERS = [f'customer-{i}' for i in range(6)]
TSCS = [f'tsc-{i}' for i in range(5)]


def _stack_env(path: Path) -> dict[str, str]:
    return dict(line.split('=', 1) for line in path.read_text().splitlines() if '=' in line)


@pytest.fixture(scope='module')
def stack(tmp_path_factory):
    state = tmp_path_factory.mktemp('stack')
    catalogue = state / 'catalogue.json'
    catalogue.write_text(json.dumps(
        [{'customerId': c, 'tscId': t, 'frequency': f'every {[5, 10, 15, 30][i % 4]} minutes',
          'namespace': f'ns-{i % 3}'} for i, (c, t) in enumerate(
              (c, t) for c in CUSTOMERS for t in TSCS)]
        + [{'customerId': 'customer-0', 'tscId': 'bad-frequency', 'frequency': 'every 7 minutes'}]))
    run = uuid.uuid4().hex[:8]
    env = {**os.environ, 'TSC_STACK_DIR': str(state), 'CONFIG_CATALOGUE': str(catalogue),
           'ORCHESTRATOR_TOPIC': f'orchestrator-{run}', 'ORCHESTRATOR_PARTITIONS': str(PARTITIONS),
           'JOB_ORCHESTRATOR_TOPIC': f'jobs-{run}', 'DLQ_TOPIC': f'orchestrator-{run}.dlq',
           'PYTHON': sys.executable}
    try:
        subprocess.run(['bash', str(ROOT / 'scripts/stack/up.sh')], env=env, check=True,
                       cwd=ROOT, timeout=900, capture_output=True)
        yield _stack_env(state / 'stack.env')
    finally:
        subprocess.run(['bash', str(ROOT / 'scripts/stack/down.sh')], env=env, cwd=ROOT,
                       timeout=120, check=False, capture_output=True)


def _good(customer: str, tsc: str, operation: str, n: int) -> bytes:
    return json.dumps({'operation': operation, 'customerId': customer, 'tscId': tsc,
                       'n': n}).encode()


POISON = [
    (b'{"operation": "create", "customerId": "customer-0"', 'parse'),
    (b'["create", "customer-0", "tsc-0"]', 'parse'),
    (b'{"operation": "create", "customerId": "", "tscId": "tsc-0"}', 'parse'),
    (b'{"operation": "create", "tscId": "tsc-0"}', 'parse'),
    (b'{"operation": "create", "customerId": 5, "tscId": "tsc-0"}', 'parse'),
    (b'{"operation": "purge", "customerId": "customer-0", "tscId": "tsc-0"}', 'parse'),
    (b'{"operation": "create", "customerId": "\xc3\x28", "tscId": "tsc-0"}', 'parse'),
    (b'{"operation": "create", "customerId": "customer-0", "tscId": "tsc-0", "pad": "'
     + b'x' * 3000 + b'"}', 'parse'),
    (b'{"operation": "create", "customerId": "nobody", "tscId": "missing"}', 'enrich'),
    (b'{"operation": "create", "customerId": "customer-0", "tscId": "bad-frequency"}',
     'validate'),
    (b'{"operation": "create", "customerId": "x\'; DROP TABLE t; --", "tscId": "../.."}',
     'enrich'),
]


def _messages(round_number: int, count: int) -> list[tuple[bytes | None, bytes, str | None]]:
    """(key, value, expected dead-letter stage or None) for one round."""
    messages = []
    for n in range(count):
        customer, tsc = CUSTOMERS[n % len(CUSTOMERS)], TSCS[(n // 3) % len(TSCS)]
        operation = ['create', 'update', 'update', 'delete'][(n + round_number) % 4]
        messages.append((f'{customer}/{tsc}'.encode(), _good(customer, tsc, operation, n), None))
    for i, (value, stage) in enumerate(POISON):
        messages.insert(7 * i + 3, (f'poison-{i}'.encode() if i % 2 else None, value, stage))
    return messages


def _produce(stack, messages) -> dict[tuple[int, int], tuple[bytes | None, bytes, str | None]]:
    """Produces the messages and returns them by (partition, offset)."""
    positions = {}
    producer = Producer({'bootstrap.servers': stack['KAFKA_BOOTSTRAP_SERVERS'],
                         'enable.idempotence': True, 'acks': 'all'})

    def delivered(error, record, message):
        assert error is None, error
        positions[(record.partition(), record.offset())] = message

    for index, message in enumerate(messages):
        key, value, _ = message
        producer.produce(stack['ORCHESTRATOR_TOPIC'], value=value, key=key,
                         partition=index % PARTITIONS,
                         on_delivery=lambda e, r, m=message: delivered(e, r, m))
    assert producer.flush(60) == 0
    assert len(positions) == len(messages)
    return positions


def _consume(stack, topic: str, expected: int, timeout: float = 60.0):
    consumer = Consumer({'bootstrap.servers': stack['KAFKA_BOOTSTRAP_SERVERS'],
                         'group.id': f'check-{uuid.uuid4().hex}', 'auto.offset.reset': 'earliest',
                         'enable.auto.commit': False})
    consumer.subscribe([topic])
    records, deadline = [], time.time() + timeout
    try:
        while time.time() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                if len(records) >= expected:
                    break
                continue
            assert message.error() is None, message.error()
            records.append(message)
    finally:
        consumer.close()
    return records


def _run_pipeline(stack, warehouse: str, max_records: int, group: str):
    command = [
        sys.executable, str(ROOT / 'run_pipeline.py'),
        '--bootstrap_servers', stack['KAFKA_BOOTSTRAP_SERVERS'],
        '--orchestrator_topic', stack['ORCHESTRATOR_TOPIC'],
        '--job_orchestrator_topic', stack['JOB_ORCHESTRATOR_TOPIC'],
        '--dead_letter_topic', stack['DEAD_LETTER_TOPIC'],
        '--consumer_group', group,
        '--kafka_expansion_service', stack['KAFKA_EXPANSION_SERVICE'],
        '--kafka_max_records', str(max_records),
        '--tsc_config_url', stack['TSC_CONFIG_URL'],
        '--warehouse', warehouse, '--job_image', 'registry.example.com/tsc-runner:1.0',
        '--tsc_config_backoff_seconds', '0.01', '--max_message_bytes', '2048',
        '--log_level', 'WARNING',
    ]
    completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600,
                               check=False)
    assert completed.returncode == 0, completed.stderr[-4000:]
    assert f'records read:      {max_records}' in completed.stdout, completed.stdout
    return completed


def _committed(stack, group: str) -> dict[int, int]:
    consumer = Consumer({'bootstrap.servers': stack['KAFKA_BOOTSTRAP_SERVERS'],
                         'group.id': group, 'enable.auto.commit': False})
    try:
        parts = consumer.committed([TopicPartition(stack['ORCHESTRATOR_TOPIC'], p)
                                    for p in range(PARTITIONS)], timeout=30)
    finally:
        consumer.close()
    return {tp.partition: tp.offset for tp in parts}


@pytest.fixture()
def topics(stack):
    """Fresh orchestrator, job and dead-letter topics for one test."""
    run = uuid.uuid4().hex[:8]
    names = {'ORCHESTRATOR_TOPIC': f'orders-{run}', 'JOB_ORCHESTRATOR_TOPIC': f'jobs-{run}',
             'DEAD_LETTER_TOPIC': f'orders-{run}.dlq'}
    admin = AdminClient({'bootstrap.servers': stack['KAFKA_BOOTSTRAP_SERVERS']})
    futures = admin.create_topics([
        NewTopic(names['ORCHESTRATOR_TOPIC'], PARTITIONS, 1),
        NewTopic(names['JOB_ORCHESTRATOR_TOPIC'], 1, 1),
        NewTopic(names['DEAD_LETTER_TOPIC'], 1, 1)])
    for future in futures.values():
        future.result(60)
    return {**stack, **names}


@pytest.fixture(params=['sqlite', 'impala'])
def warehouse(request, tmp_path):
    """(URL for --warehouse, SQLite file holding the rows)."""
    if request.param == 'sqlite':
        yield f'sqlite:///{tmp_path / "wh.db"}', tmp_path / 'wh.db'
        return
    server = HS2Server(tmp_path / 'hs2.db').start()
    try:
        url = f'impala://127.0.0.1:{server.port}/default'
        created = subprocess.run(
            [sys.executable, str(ROOT / 'run_pipeline.py'), '--create_tables', '--warehouse', url],
            cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
        assert created.returncode == 0, created.stderr[-3000:]
        yield url, tmp_path / 'hs2.db'
    finally:
        server.stop()


def test_kafka_mode_accounts_for_every_message_across_a_restart(topics, warehouse):
    stack = topics
    warehouse_url, warehouse_file = warehouse
    group = f'orchestrator-{uuid.uuid4().hex[:6]}'
    topic = stack['ORCHESTRATOR_TOPIC']

    first = _produce(stack, _messages(0, 240))
    _run_pipeline(stack, warehouse_url, len(first), group)
    # Offsets are committed when the runner finalizes the bundles that read them.
    assert sum(_committed(stack, group).values()) == len(first)

    second = _produce(stack, _messages(1, 120))
    _run_pipeline(stack, warehouse_url, len(second), group)
    assert sum(_committed(stack, group).values()) == len(first) + len(second)
    produced = {**first, **second}
    assert len(produced) == len(first) + len(second)

    database = sqlite3.connect(warehouse_file)
    processed = collections.Counter(
        (partition, offset) for topic_name, partition, offset in database.execute(
            'SELECT source_topic, source_partition, source_offset FROM processed_data')
        if topic_name == topic)
    dead = _consume(stack, stack['DEAD_LETTER_TOPIC'], 2 * len(POISON))
    dead_positions = collections.Counter(
        (int(dict(d.headers())['dlq.source.partition']),
         int(dict(d.headers())['dlq.source.offset'])) for d in dead)

    # Every produced message is accounted for exactly once: one row or one dead letter.
    assert set(processed) | set(dead_positions) == set(produced)
    assert not set(processed) & set(dead_positions)
    assert max(processed.values()) == 1 and max(dead_positions.values()) == 1
    for record in dead:
        headers = dict(record.headers())
        position = (int(headers['dlq.source.partition']), int(headers['dlq.source.offset']))
        key, value, stage = produced[position]
        assert headers['dlq.stage'].decode() == stage
        assert record.value() == value and record.key() == key  # original bytes
        assert headers['dlq.source.topic'].decode() == topic
        assert headers['dlq.error.class'] and headers['dlq.error.message']
        assert headers['dlq.failed.at']
    assert {p for p, (_, _, stage) in produced.items() if stage} == set(dead_positions)

    jobs = _consume(stack, stack['JOB_ORCHESTRATOR_TOPIC'], 1)
    assert jobs
    latest = {}
    for job in jobs:
        headers = {k: v.decode() for k, v in job.headers()}
        manifest = yaml.safe_load(job.value())
        kubernetes_validate.validate(manifest, '1.33', strict=True)
        name = manifest['metadata']['name']
        assert name == cronjob_name(headers['customerId'], headers['tscId'])
        assert job.key().decode() == f'{manifest["metadata"]["namespace"]}/{name}'
        assert headers['action'] == ('delete' if headers['operation'] == 'delete' else 'apply')
        latest[(headers['customerId'], headers['tscId'])] = headers['action']
    stored = {(c, t) for c, t in database.execute(
        'SELECT customer_id, tsc_id FROM tsc_configurations')}
    # The warehouse and the latest job record per key agree on what exists.
    assert stored == {key for key, action in latest.items() if action == 'apply'}
