"""Launcher: builds the pipeline for the chosen mode, runs it and summarizes a bounded run."""

from __future__ import annotations

import logging

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from pipeline.graph import (
    ConfigurationError,
    KafkaSettings,
    OrchestratorSettings,
    build_kafka_pipeline,
    build_local_pipeline,
)
from pipeline.options import OrchestratorOptions
from transforms.dead_letters import STAGES
from transforms.warehouse import WarehouseError, describe_warehouse, open_warehouse

_LOGGER = logging.getLogger(__name__)

# The in-process portable runner behind the DirectRunner: it needs no download, unlike
# the DirectRunner's first choice (Prism), whose binary is fetched from the internet.
LOCAL_RUNNER = 'FnApiRunner'
DEFAULT_CHECKPOINTING_INTERVAL_MS = 10_000
LOCAL_RUNNERS = ('FnApiRunner', 'DirectRunner', 'SwitchingDirectRunner', 'BundleBasedDirectRunner',
                 'PrismRunner')


def counters(result) -> dict[str, int]:
    """The pipeline's ``orchestrator`` counters, summed over steps."""
    totals: dict[str, int] = {}
    query = result.metrics().query(MetricsFilter().with_namespace('orchestrator'))
    for counter in query['counters']:
        value = counter.committed if counter.committed is not None else counter.attempted
        totals[counter.key.metric.name] = totals.get(counter.key.metric.name, 0) + (value or 0)
    return totals


def summary(totals: dict[str, int]) -> str:
    """A short human summary of a bounded run."""
    by_stage = {stage: totals.get(f'dead_letters_{stage}', 0) for stage in STAGES}
    dead = sum(by_stage.values())
    stages = ', '.join(f'{stage}={count}' for stage, count in by_stage.items() if count)
    return '\n'.join([
        f'records read:      {totals.get("read", 0)}',
        f'processed:         {totals.get("archived", 0)}',
        f'jobs emitted:      {totals.get("jobs", 0)}',
        f'dead letters:      {dead}' + (f' ({stages})' if stages else ''),
        f'REST requests:     {totals.get("rest_requests", 0)}',
        f'SQL statements:    {totals.get("sql_statements", 0)}',
    ])


def create_tables(warehouse: str, impala_clusters: str | None = None) -> None:
    """Creates both tables where ``--warehouse`` (or every cluster of the file) points."""
    writer = open_warehouse(warehouse, impala_clusters=impala_clusters)
    try:
        writer.create_tables()
    finally:
        writer.close()
    _LOGGER.info('tables ready in %s', describe_warehouse(warehouse))


def with_checkpointing(options: PipelineOptions,
                       interval_ms: int = DEFAULT_CHECKPOINTING_INTERVAL_MS) -> PipelineOptions:
    """Options with Flink checkpointing on, unless ``--checkpointing_interval`` was given.

    Kafka offsets are committed when a checkpoint finalizes the bundles that read them,
    so a streaming run without checkpoints would never commit. Beam's Python SDK does
    not parse this Flink option; it passes it to the job server as it is.
    """
    current = options.get_all_options(retain_unknown_options=True)
    if current.get('checkpointing_interval') is not None:
        return options
    given = {name: value for name, value in current.items() if value is not None}
    return PipelineOptions.from_dictionary({**given, 'checkpointing_interval': interval_ms})


def run(options: PipelineOptions) -> int:
    """Builds and runs the orchestrator for ``options``; returns the process exit code."""
    orchestrator = options.view_as(OrchestratorOptions)
    try:
        if orchestrator.create_tables:
            try:
                create_tables(orchestrator.warehouse, orchestrator.impala_clusters)
            except (ValueError, WarehouseError) as e:
                raise ConfigurationError(f'cannot create the tables: {e}') from e
            return 0
        standard = options.view_as(StandardOptions)
        if standard.runner is None:
            standard.runner = LOCAL_RUNNER
        if orchestrator.input:
            settings = OrchestratorSettings.from_options(orchestrator, streaming=False)
            pipeline = beam.Pipeline(options=options)
            build_local_pipeline(pipeline, orchestrator, settings)
        else:
            kafka = KafkaSettings.from_options(orchestrator)
            local = standard.runner in LOCAL_RUNNERS
            if local and not kafka.bounded:
                raise ConfigurationError(
                    'the local runner reads Kafka only bounded: give --kafka_max_records or '
                    '--kafka_max_read_time_seconds, or run on a streaming runner (Flink)')
            if not local:
                standard.streaming = True
                options = with_checkpointing(options)
            settings = OrchestratorSettings.from_options(orchestrator, streaming=not local)
            pipeline = beam.Pipeline(options=options)
            build_kafka_pipeline(pipeline, settings, kafka)
            _LOGGER.info('Kafka mode: %s -> %s, dead letters -> %s, group %s',
                         kafka.orchestrator_topic, kafka.job_orchestrator_topic,
                         kafka.dead_letter_topic, kafka.consumer_group)
    except ConfigurationError as e:
        _LOGGER.error('%s', e)
        print(f'error: {e}')
        return 2
    _LOGGER.info('running on %s, warehouse %s', options.view_as(StandardOptions).runner,
                 describe_warehouse(settings.warehouse))
    result = pipeline.run()
    result.wait_until_finish()
    print(summary(counters(result)))
    if orchestrator.input:
        print(f'outputs: jobs {orchestrator.jobs_out}, dead letters '
              f'{orchestrator.dead_letter_out}, warehouse {describe_warehouse(settings.warehouse)}')
    else:
        print(f'outputs: jobs topic {kafka.job_orchestrator_topic}, dead letters topic '
              f'{kafka.dead_letter_topic}, warehouse {describe_warehouse(settings.warehouse)}')
    return 0
