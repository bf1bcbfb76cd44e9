"""The core graph on TestPipeline: accounting invariant, warehouse-side failures, settings."""

from __future__ import annotations

import json
import sqlite3

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipeline.graph import (
    ConfigurationError,
    OrchestratorSettings,
    build_orchestrator,
    kafka_client_config,
)
from transforms.records import SourceRecord
from transforms.warehouse import TABLES, sqlite_ddl

CATALOGUE = {
    ('c1', 'ok'): {'customerId': 'c1', 'tscId': 'ok', 'frequency': 'hourly'},
    ('c1', 'reject-me'): {'customerId': 'c1', 'tscId': 'reject-me', 'frequency': 'daily'},
    ('c2', 'ok'): {'customerId': 'c2', 'tscId': 'ok', 'frequency': 'weekly on mon at 9am'},
}


@pytest.fixture()
def config_url(serve_configs):
    return serve_configs(CATALOGUE)


def _record(offset, operation, customer, tsc, partition=0, **extra):
    value = json.dumps({'operation': operation, 'customerId': customer, 'tscId': tsc, **extra})
    return SourceRecord(value=value.encode(), key=f'{customer}/{tsc}'.encode(), topic='orders',
                        partition=partition, offset=offset)


def _prepare_warehouse(path):
    """Tables whose CHECK constraints reject chosen rows, as a warehouse may refuse rows."""
    database = sqlite3.connect(path)
    for table in TABLES:
        ddl = sqlite_ddl(table)
        if table.name == 'tsc_configurations':
            ddl = ddl[:-2] + ",\n  CHECK (tsc_id <> 'reject-me')\n)"
        else:
            ddl = ddl[:-2] + ",\n  CHECK (payload NOT LIKE '%archive-poison%')\n)"
        database.execute(ddl)
    database.commit()
    database.close()


def test_every_record_is_processed_or_dead_lettered_once(tmp_path, config_url):
    warehouse = tmp_path / 'wh.db'
    _prepare_warehouse(warehouse)
    settings = OrchestratorSettings(tsc_config_url=config_url, warehouse=f'sqlite:///{warehouse}',
                                    job_image='img:1', tsc_config_backoff_seconds=0.01,
                                    batch_size=50, num_shards=2)
    records = [
        _record(0, 'create', 'c1', 'ok'),
        _record(1, 'update', 'c1', 'ok'),
        _record(2, 'create', 'c1', 'reject-me'),             # refused by the warehouse: upsert
        _record(3, 'create', 'c2', 'ok', note='archive-poison'),  # refused at archive
        _record(4, 'create', 'c9', 'unknown'),               # 404: enrich
        SourceRecord(b'not json', None, 'orders', 0, 5),    # parse
        _record(0, 'delete', 'c2', 'ok', partition=1),
    ]
    with TestPipeline(runner='FnApiRunner') as p:
        outputs = build_orchestrator(p | beam.Create(records), settings)
        dead = (outputs.dead_letters | 'AllDeadLetters' >> beam.Flatten()
                | 'DeadPositions' >> beam.Map(lambda d: (
                    int(d.header('dlq.source.partition')), int(d.header('dlq.source.offset')),
                    d.header('dlq.stage').decode())))
        processed = outputs.processed | 'ProcessedPositions' >> beam.Map(
            lambda row: (row['source_partition'], row['source_offset']))
        jobs = outputs.jobs | 'JobKeys' >> beam.Map(
            lambda job: (job.header('customerId').decode(), job.header('tscId').decode(),
                         job.header('action').decode()))
        assert_that(dead, equal_to([(0, 2, 'upsert'), (0, 3, 'archive'), (0, 4, 'enrich'),
                                    (0, 5, 'parse')]), label='DeadLetters')
        assert_that(processed, equal_to([(0, 0), (0, 1), (1, 0)]), label='Processed')
        # c2/ok: offsets of different partitions have no order; the latest by position wins.
        assert_that(jobs, equal_to([('c1', 'ok', 'apply'), ('c2', 'ok', 'delete')]),
                    label='Jobs')

    database = sqlite3.connect(warehouse)
    stored = database.execute(
        'SELECT customer_id, tsc_id, source_offset FROM tsc_configurations').fetchall()
    assert stored == [('c1', 'ok', 1)]


@pytest.mark.parametrize('overrides, message', [
    ({'tsc_config_url': 'ftp://x'}, '--tsc_config_url must be an http(s) URL'),
    ({'tsc_config_url': 'http://u:p@x'}, 'must not carry credentials'),
    ({'tsc_config_path': '/x/{customerId}'}, 'must contain {customerId} and {tscId}'),
    ({'warehouse': 'postgres://x'}, '--warehouse must be sqlite:///PATH or impala://'),
    ({'warehouse': 'impala://u:pw@host:21050/db'}, 'do not put a password'),
    ({'job_image': ''}, '--job_image'),
])
def test_settings_fail_at_construction_saying_what_to_fix(overrides, message):
    values = dict(tsc_config_url='http://127.0.0.1:8080', warehouse='sqlite:///x.db',
                  job_image='img:1')
    values.update(overrides)
    with pytest.raises(ConfigurationError, match=message.replace('(', r'\(').replace(
            ')', r'\)').replace('{', r'\{').replace('}', r'\}')) as raised:
        OrchestratorSettings(**values)
    assert 'pw' not in str(raised.value) or 'password' in str(raised.value)


def test_kafka_client_config_keeps_the_password_file_out_of_the_job_graph(tmp_path):
    secret = tmp_path / 'kafka-password'
    secret.write_text('s3cr3t', encoding='utf-8')
    config = kafka_client_config(['client.dns.lookup=use_all_dns_ips'], {
        'KAFKA_SECURITY_PROTOCOL': 'SASL_SSL', 'KAFKA_SASL_MECHANISM': 'SCRAM-SHA-512',
        'KAFKA_SASL_USERNAME': 'orchestrator', 'KAFKA_SASL_PASSWORD_FILE': str(secret)})
    assert config['security.protocol'] == 'SASL_SSL'
    assert config['client.dns.lookup'] == 'use_all_dns_ips'
    assert config['config.providers.dir.class'].endswith('DirectoryConfigProvider')
    assert config['sasl.jaas.config'] == (
        'org.apache.kafka.common.security.scram.ScramLoginModule required '
        f'username="orchestrator" password="${{dir:{tmp_path}:kafka-password}}";')
    assert 's3cr3t' not in repr(config)


@pytest.mark.parametrize('pairs, environ, message', [
    (['sasl.jaas.config=x'], {}, 'secrets go in KAFKA_SASL_PASSWORD'),
    (['ssl.key.password=x'], {}, 'secrets go in KAFKA_SASL_PASSWORD'),
    (['novalue'], {}, 'takes KEY=VALUE'),
    ([], {'KAFKA_SASL_MECHANISM': 'PLAIN'}, 'needs KAFKA_SASL_USERNAME'),
])
def test_kafka_client_config_refuses_secrets_on_the_command_line(pairs, environ, message):
    with pytest.raises(ConfigurationError, match=message):
        kafka_client_config(pairs, environ)
