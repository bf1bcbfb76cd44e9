"""Graph assembly: the core orchestrator graph, and the pipeline around it for each mode."""

from __future__ import annotations

import dataclasses
import os
from typing import NamedTuple

import apache_beam as beam

from pipeline import handlers
from pipeline.options import OrchestratorOptions
from transforms.batching import BatchMessagesByTsc
from transforms.cronjob_builder import RenderCronJobs
from transforms.impala_module import ArchiveMessages, UpsertTscConfigurations
from transforms.impala_writer import load_impala_clusters
from transforms.kafka_io import ReadOrchestratorTopic, WriteKafkaRecords
from transforms.local_io import ReadMessageFile, WriteRecordsJsonl
from transforms.parser import ParseMessages
from transforms.tsc_config_client import EnrichWithTscConfig, check_base_url, check_path_template
from transforms.warehouse import check_warehouse_url


class ConfigurationError(ValueError):
    """The pipeline's options are unusable; the message says what to fix."""


@dataclasses.dataclass(frozen=True)
class OrchestratorSettings:
    """Plain, validated values the stages are built from."""

    tsc_config_url: str
    warehouse: str
    job_image: str
    job_namespace: str = 'default'
    tsc_config_path: str = '/customers/{customerId}/tscs/{tscId}/configuration'
    tsc_config_attempts: int = 3
    tsc_config_backoff_seconds: float = 1.0
    tsc_config_timeout_seconds: float = 10.0
    tsc_config_max_retry_after_seconds: float = 30.0
    tsc_config_concurrency: int = 16
    tsc_config_token_file: str | None = None
    max_message_bytes: int = 1024 * 1024
    batch_size: int = 2000
    num_shards: int = 8
    max_batch_delay_seconds: float | None = None
    keyed_batches: bool = True
    impala_clusters: str | None = None
    impala_max_rows_per_statement: int = 1000
    impala_max_statement_bytes: int = 4 * 1024 * 1024

    def __post_init__(self):
        try:
            check_base_url(self.tsc_config_url or '')
            check_path_template(self.tsc_config_path)
            if self.impala_clusters:
                load_impala_clusters(self.impala_clusters)
            else:
                check_warehouse_url(self.warehouse)
        except ValueError as e:
            raise ConfigurationError(str(e)) from e
        if not 1 <= self.impala_max_rows_per_statement <= 100_000:
            raise ConfigurationError('--impala_max_rows_per_statement must be 1..100000')
        if not 1024 <= self.impala_max_statement_bytes <= 16 * 1024 * 1024:
            raise ConfigurationError('--impala_max_statement_bytes must be 1 KiB..16 MiB '
                                     '(Impala\'s MAX_STATEMENT_LENGTH_BYTES)')
        if not self.job_image:
            raise ConfigurationError('--job_image (or JOB_IMAGE) is required: the image of '
                                     'CronJobs whose configuration names none')

    @classmethod
    def from_options(cls, options: OrchestratorOptions, *,
                     streaming: bool) -> OrchestratorSettings:
        if not options.tsc_config_url:
            raise ConfigurationError('--tsc_config_url (or TSC_CONFIG_URL) is required')
        return cls(
            tsc_config_url=options.tsc_config_url,
            tsc_config_path=options.tsc_config_path,
            tsc_config_attempts=options.tsc_config_attempts,
            tsc_config_backoff_seconds=options.tsc_config_backoff_seconds,
            tsc_config_timeout_seconds=options.tsc_config_timeout_seconds,
            tsc_config_max_retry_after_seconds=options.tsc_config_max_retry_after_seconds,
            tsc_config_concurrency=options.tsc_config_concurrency,
            tsc_config_token_file=options.tsc_config_token_file,
            warehouse=options.warehouse,
            job_image=options.job_image,
            job_namespace=options.job_namespace,
            max_message_bytes=options.max_message_bytes,
            batch_size=options.batch_size,
            num_shards=options.num_shards,
            max_batch_delay_seconds=options.max_batch_delay_seconds if streaming else None,
            # Parallel streaming workers need a key's messages routed to one worker; the
            # in-process runner handles bundles one at a time, in order.
            keyed_batches=streaming,
            impala_clusters=options.impala_clusters,
            impala_max_rows_per_statement=options.impala_max_rows_per_statement,
            impala_max_statement_bytes=options.impala_max_statement_bytes,
        )

    @property
    def writer_settings(self) -> dict:
        """Keyword arguments of ``open_warehouse`` beyond the URL."""
        settings: dict = {}
        if self.impala_clusters:
            settings['impala_clusters'] = self.impala_clusters
        if self.impala_clusters or self.warehouse.startswith('impala:'):
            settings['max_rows_per_statement'] = self.impala_max_rows_per_statement
            settings['max_statement_bytes'] = self.impala_max_statement_bytes
        return settings


class OrchestratorOutputs(NamedTuple):
    """The core graph's outputs: Kafka-shaped job records and dead letters, archived rows.

    ``dead_letters`` holds each stage's dead-letter PCollection apart; sinks take the
    tuple as it is (``WriteRecordsJsonl``) or flatten it (Kafka). The in-process runner
    would materialize a Flatten whole, so the graph leaves that choice to the edge.
    """

    jobs: beam.PCollection
    dead_letters: tuple[beam.PCollection, ...]
    processed: beam.PCollection


def build_orchestrator(records: beam.PCollection,
                       settings: OrchestratorSettings) -> OrchestratorOutputs:
    """Applies every stage to a PCollection of ``SourceRecord``; IO stays with the caller."""
    parsed = records | 'ParseMessages' >> ParseMessages(
        handlers.operations(), max_message_bytes=settings.max_message_bytes)
    batches = parsed['messages'] | 'BatchMessagesByTsc' >> BatchMessagesByTsc(
        settings.batch_size, settings.num_shards, settings.max_batch_delay_seconds,
        keyed=settings.keyed_batches)
    enriched = batches | 'EnrichWithTscConfig' >> EnrichWithTscConfig(
        settings.tsc_config_url,
        path_template=settings.tsc_config_path,
        config_operations=handlers.config_operations(),
        attempts=settings.tsc_config_attempts,
        backoff_seconds=settings.tsc_config_backoff_seconds,
        timeout_seconds=settings.tsc_config_timeout_seconds,
        max_retry_after_seconds=settings.tsc_config_max_retry_after_seconds,
        concurrency=settings.tsc_config_concurrency,
        token_file=settings.tsc_config_token_file)
    upserted = enriched['batches'] | 'UpsertTscConfigurations' >> UpsertTscConfigurations(
        settings.warehouse, delete_operations=handlers.delete_operations(),
        writer_settings=settings.writer_settings)
    rendered = upserted['batches'] | 'RenderCronJobs' >> RenderCronJobs(
        job_actions=handlers.job_actions(), default_namespace=settings.job_namespace,
        default_image=settings.job_image)
    archived = rendered['batches'] | 'ArchiveMessages' >> ArchiveMessages(
        settings.warehouse, writer_settings=settings.writer_settings)
    dead_letters = (parsed['dead_letters'],) + tuple(
        stage[tag] for stage in (enriched, upserted, rendered, archived)
        for tag in ('dead_letters', 'failed'))
    return OrchestratorOutputs(jobs=rendered['jobs'], dead_letters=dead_letters,
                               processed=archived['rows'])


@dataclasses.dataclass(frozen=True)
class KafkaSettings:
    """Plain, validated values of Kafka mode."""

    bootstrap_servers: str
    orchestrator_topic: str
    job_orchestrator_topic: str
    dead_letter_topic: str
    consumer_group: str
    expansion_service: str
    auto_offset_reset: str = 'earliest'
    client_config: dict = dataclasses.field(default_factory=dict, repr=False)
    max_records: int | None = None
    max_read_time_seconds: int | None = None

    @classmethod
    def from_options(cls, options: OrchestratorOptions) -> KafkaSettings:
        if not options.bootstrap_servers:
            raise ConfigurationError('Kafka mode needs --bootstrap_servers (or '
                                     'KAFKA_BOOTSTRAP_SERVERS); local mode needs --input PATH')
        if not options.kafka_expansion_service:
            raise ConfigurationError('Kafka mode needs --kafka_expansion_service host:port (or '
                                     'KAFKA_EXPANSION_SERVICE): `make up` starts one')
        for name in ('orchestrator_topic', 'job_orchestrator_topic', 'consumer_group'):
            if not getattr(options, name):
                raise ConfigurationError(f'--{name} must not be empty')
        dead_letter_topic = options.dead_letter_topic or f'{options.orchestrator_topic}.dlq'
        if len({options.orchestrator_topic, options.job_orchestrator_topic,
                dead_letter_topic}) != 3:
            raise ConfigurationError('the orchestrator, job and dead-letter topics must differ')
        for name in ('kafka_max_records', 'kafka_max_read_time_seconds'):
            if getattr(options, name) is not None and getattr(options, name) < 1:
                raise ConfigurationError(f'--{name} must be positive')
        return cls(
            bootstrap_servers=options.bootstrap_servers,
            orchestrator_topic=options.orchestrator_topic,
            job_orchestrator_topic=options.job_orchestrator_topic,
            dead_letter_topic=dead_letter_topic,
            consumer_group=options.consumer_group,
            expansion_service=options.kafka_expansion_service,
            auto_offset_reset=options.auto_offset_reset,
            client_config=kafka_client_config(options.kafka_config or [], os.environ),
            max_records=options.kafka_max_records,
            max_read_time_seconds=options.kafka_max_read_time_seconds)

    @property
    def bounded(self) -> bool:
        return self.max_records is not None or self.max_read_time_seconds is not None


def kafka_client_config(pairs: list[str], environ: dict) -> dict[str, str]:
    """Kafka client properties from ``--kafka_config`` pairs and the security environment.

    A SASL password comes only from the environment: ``KAFKA_SASL_PASSWORD_FILE`` (read by
    the Kafka client on the worker; preferred) or ``KAFKA_SASL_PASSWORD`` (which then is part
    of the job graph).
    """
    config: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition('=')
        if not sep or not key.strip():
            raise ConfigurationError(f'--kafka_config takes KEY=VALUE, got {key!r}…')
        if 'password' in key.lower() or key.strip() == 'sasl.jaas.config':
            raise ConfigurationError(f'--kafka_config {key}: secrets go in '
                                     'KAFKA_SASL_PASSWORD(_FILE), not on the command line')
        config[key.strip()] = value
    if environ.get('KAFKA_SECURITY_PROTOCOL'):
        config['security.protocol'] = environ['KAFKA_SECURITY_PROTOCOL']
    mechanism = environ.get('KAFKA_SASL_MECHANISM')
    if mechanism:
        config['sasl.mechanism'] = mechanism
        username = environ.get('KAFKA_SASL_USERNAME', '')
        password_file = environ.get('KAFKA_SASL_PASSWORD_FILE')
        if password_file:
            # Kafka's DirectoryConfigProvider reads the file on the worker when the client
            # starts, so the password never travels in the job graph.
            directory, name = os.path.split(os.path.abspath(password_file))
            config['config.providers'] = 'dir'
            config['config.providers.dir.class'] = (
                'org.apache.kafka.common.config.provider.DirectoryConfigProvider')
            password = f'${{dir:{directory}:{name}}}'
        else:
            password = environ.get('KAFKA_SASL_PASSWORD', '')
        if not username or not password:
            raise ConfigurationError('KAFKA_SASL_MECHANISM needs KAFKA_SASL_USERNAME and '
                                     'KAFKA_SASL_PASSWORD_FILE (or KAFKA_SASL_PASSWORD)')
        module = ('org.apache.kafka.common.security.scram.ScramLoginModule'
                  if mechanism.upper().startswith('SCRAM') else
                  'org.apache.kafka.common.security.plain.PlainLoginModule')
        quoted_user = username.replace('\\', '\\\\').replace('"', '\\"')
        quoted_password = password.replace('\\', '\\\\').replace('"', '\\"')
        config['sasl.jaas.config'] = (f'{module} required username="{quoted_user}" '
                                      f'password="{quoted_password}";')
    return config


def build_kafka_pipeline(pipeline: beam.Pipeline, settings: OrchestratorSettings,
                         kafka: KafkaSettings) -> OrchestratorOutputs:
    """Kafka mode: the orchestrator topic in; job records and dead letters out to their topics."""
    client = {'bootstrap.servers': kafka.bootstrap_servers, **kafka.client_config}
    records = pipeline | 'ReadOrchestratorTopic' >> ReadOrchestratorTopic(
        client, kafka.orchestrator_topic, consumer_group=kafka.consumer_group,
        auto_offset_reset=kafka.auto_offset_reset, expansion_service=kafka.expansion_service,
        max_num_records=kafka.max_records, max_read_time_seconds=kafka.max_read_time_seconds)
    outputs = build_orchestrator(records, settings)
    _ = outputs.jobs | 'PublishJobs' >> WriteKafkaRecords(
        client, kafka.job_orchestrator_topic, expansion_service=kafka.expansion_service)
    _ = (outputs.dead_letters | 'CollectDeadLetters' >> beam.Flatten()
         | 'PublishDeadLetters' >> WriteKafkaRecords(
        client, kafka.dead_letter_topic, expansion_service=kafka.expansion_service))
    return outputs


def build_local_pipeline(pipeline: beam.Pipeline, options: OrchestratorOptions,
                         settings: OrchestratorSettings) -> OrchestratorOutputs:
    """Local mode: a message file in, JSON Lines files out, the warehouse from ``--warehouse``."""
    if not options.input:
        raise ConfigurationError('local mode needs --input PATH')
    if not os.path.isfile(options.input):
        raise ConfigurationError(f'--input {options.input!r} is not a readable file')
    if len({os.path.abspath(p) for p in (options.input, options.jobs_out,
                                         options.dead_letter_out)}) != 3:
        raise ConfigurationError('--input, --jobs_out and --dead_letter_out must be three '
                                 'different files')
    records = pipeline | 'ReadMessageFile' >> ReadMessageFile(options.input)
    outputs = build_orchestrator(records, settings)
    _ = outputs.jobs | 'WriteJobs' >> WriteRecordsJsonl(options.jobs_out)
    _ = outputs.dead_letters | 'WriteDeadLetters' >> WriteRecordsJsonl(options.dead_letter_out)
    return outputs
