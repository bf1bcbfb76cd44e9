"""Tests for RenderCronJobs (transforms.cronjob_builder) in a pipeline."""

from __future__ import annotations

import json

import apache_beam as beam
import pytest
import yaml
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipeline.handlers import job_actions
from transforms.cronjob_builder import RenderCronJobs, cronjob_name
from transforms.dead_letters import (
    HEADER_ERROR_CLASS,
    HEADER_ERROR_MESSAGE,
    HEADER_SOURCE_OFFSET,
    HEADER_STAGE,
)
from transforms.records import Message, SourceRecord

DEFAULT_NAMESPACE = 'jobs'
DEFAULT_IMAGE = 'registry.example.com/tsc-runner:1.0'


def message(offset: int, operation: str, customer_id: str, tsc_id: str, *,
            config: dict | None = None, schedule: str | None = None,
            superseded: bool = False) -> Message:
    text = json.dumps({'operation': operation, 'customerId': customer_id, 'tscId': tsc_id})
    source = SourceRecord(value=text.encode(), key=b'k%d' % offset, topic='orders',
                          partition=0, offset=offset)
    return Message(source=source, operation=operation, customer_id=customer_id, tsc_id=tsc_id,
                   payload=json.loads(text), text=text, config=config, cron_schedule=schedule,
                   superseded=superseded)


def tsc_config(customer_id: str, tsc_id: str, **fields) -> dict:
    return {'customerId': customer_id, 'tscId': tsc_id, 'frequency': 'daily', 'enabled': True,
            **fields}


def _job_summary(record):
    manifest = yaml.safe_load(record.value)
    headers = {name: value.decode() for name, value in record.headers}
    return (record.key.decode(), headers['action'], headers['operation'], headers['customerId'],
            headers['tscId'], manifest['kind'], manifest['metadata']['namespace'],
            sorted(manifest))


def test_render_cron_jobs_pipeline():
    c1_name = cronjob_name('c1', 't1')
    c2_name = cronjob_name('c2', '../t2')
    c3_name = cronjob_name('c3', 't3')
    c4_name = cronjob_name('c4', 't4')
    batches = [
        [
            message(0, 'create', 'c1', 't1', config=tsc_config('c1', 't1', namespace='ns-a'),
                    schedule='0 0 * * *', superseded=True),
            message(1, 'update', 'c1', 't1', config=tsc_config(
                'c1', 't1', namespace='ns-a', image='img:2', timezone='Europe/Rome',
                parameters={'x': 1}, enabled=False), schedule='0 * * * *'),
            message(2, 'create', 'c2', '../t2', config=tsc_config('c2', '../t2'),
                    schedule='*/5 * * * *'),
        ],
        [
            # A delete carries the stored config (from the upsert stage): its namespace.
            message(3, 'delete', 'c3', 't3', config=tsc_config('c3', 't3', namespace='ns-old')),
            message(4, 'delete', 'c4', 't4'),  # nothing stored: the default namespace
            message(5, 'delete', 'c4', 't4', superseded=True),
            message(6, 'create', 'c5', 't5', config=tsc_config('c5', 't5')),  # no schedule
            message(7, 'create', 'c6', 't6', config=tsc_config('c6', 't6', namespace='Bad_NS'),
                    schedule='0 0 * * *'),
        ],
    ]

    with TestPipeline(runner='FnApiRunner') as pipeline:
        rendered = (pipeline
                    | beam.Create(batches)
                    | RenderCronJobs(job_actions(), DEFAULT_NAMESPACE, DEFAULT_IMAGE))
        assert_that(
            rendered['batches'] | 'Summarize' >> beam.Map(lambda batch: [
                (m.source.offset, m.superseded, m.job.key.decode() if m.job else None)
                for m in batch]),
            equal_to([
                [(0, True, None), (1, False, f'ns-a/{c1_name}'),
                 (2, False, f'{DEFAULT_NAMESPACE}/{c2_name}')],
                [(3, False, f'ns-old/{c3_name}'), (4, False, f'{DEFAULT_NAMESPACE}/{c4_name}'),
                 (5, True, None)],
            ]),
            label='batches')
        assert_that(
            rendered[RenderCronJobs.JOBS] | 'Jobs' >> beam.Map(_job_summary),
            equal_to([
                (f'ns-a/{c1_name}', 'apply', 'update', 'c1', 't1', 'CronJob', 'ns-a',
                 ['apiVersion', 'kind', 'metadata', 'spec']),
                (f'{DEFAULT_NAMESPACE}/{c2_name}', 'apply', 'create', 'c2', '../t2', 'CronJob',
                 DEFAULT_NAMESPACE, ['apiVersion', 'kind', 'metadata', 'spec']),
                (f'ns-old/{c3_name}', 'delete', 'delete', 'c3', 't3', 'CronJob', 'ns-old',
                 ['apiVersion', 'kind', 'metadata']),
                (f'{DEFAULT_NAMESPACE}/{c4_name}', 'delete', 'delete', 'c4', 't4', 'CronJob',
                 DEFAULT_NAMESPACE, ['apiVersion', 'kind', 'metadata']),
            ]),
            label='jobs')
        assert_that(
            rendered[RenderCronJobs.JOBS]
            | 'AppliedSpecs' >> beam.Filter(lambda r: r.header('operation') == b'update')
            | 'Spec' >> beam.Map(lambda r: _spec_summary(yaml.safe_load(r.value))),
            equal_to([('0 * * * *', 'Europe/Rome', True, 'img:2', {'x': 1})]),
            label='spec')
        assert_that(
            rendered[RenderCronJobs.DEAD_LETTERS] | 'DeadLetters' >> beam.Map(lambda r: (
                int(r.header(HEADER_SOURCE_OFFSET)), r.header(HEADER_STAGE).decode(),
                r.header(HEADER_ERROR_CLASS).decode(), r.key, json.loads(r.value)['tscId'],
                _fragment(r.header(HEADER_ERROR_MESSAGE).decode()))),
            equal_to([(6, 'render', 'ValueError', b'k6', 't5', 'schedule is required'),
                      (7, 'render', 'ValueError', b'k7', 't6', 'not a DNS-1123 label')]),
            label='dead_letters')


def _fragment(text: str) -> str:
    for fragment in ('schedule is required', 'not a DNS-1123 label'):
        if fragment in text:
            return fragment
    return text


def _spec_summary(manifest):
    spec = manifest['spec']
    container = spec['jobTemplate']['spec']['template']['spec']['containers'][0]
    env = {item['name']: item['value'] for item in container['env']}
    return (spec['schedule'], spec.get('timeZone'), spec['suspend'], container['image'],
            json.loads(env['TSC_PARAMETERS']))


def test_delete_addresses_the_key_the_create_produced():
    config = tsc_config('cust/1', 'tsc 1', namespace='team-x')
    batch = [message(0, 'create', 'cust/1', 'tsc 1', config=config, schedule='0 0 * * *'),
             message(1, 'delete', 'cust/1', 'tsc 1', config=config)]

    with TestPipeline(runner='FnApiRunner') as pipeline:
        jobs = (pipeline | beam.Create([batch])
                | RenderCronJobs(job_actions(), DEFAULT_NAMESPACE, DEFAULT_IMAGE))['jobs']
        assert_that(
            jobs | beam.Map(lambda r: (r.key, r.header('action'))),
            equal_to([(f'team-x/{cronjob_name("cust/1", "tsc 1")}'.encode(), b'apply'),
                      (f'team-x/{cronjob_name("cust/1", "tsc 1")}'.encode(), b'delete')]))


@pytest.mark.parametrize('namespace', ['', 'Bad', 'a_b', '-a', 'a' * 64, 'ns\n', None])
def test_render_rejects_bad_default_namespace(namespace):
    with pytest.raises(ValueError, match='--job_namespace'):
        RenderCronJobs(job_actions(), namespace, DEFAULT_IMAGE)


@pytest.mark.parametrize('image', ['', None])
def test_render_rejects_empty_image(image):
    with pytest.raises(ValueError, match='--job_image'):
        RenderCronJobs(job_actions(), DEFAULT_NAMESPACE, image)


@pytest.mark.parametrize('actions', [
    {'create': 'create'}, {'create': 'apply', 'delete': 'remove'}, {'create': ''},
    {'create': 'APPLY'},
])
def test_render_rejects_bad_actions(actions):
    with pytest.raises(ValueError, match='job actions must be apply or delete'):
        RenderCronJobs(actions, DEFAULT_NAMESPACE, DEFAULT_IMAGE)


def test_render_accepts_the_handlers_actions():
    RenderCronJobs(job_actions(), 'a' * 63, DEFAULT_IMAGE)
    assert job_actions() == {'create': 'apply', 'update': 'apply', 'delete': 'delete'}
