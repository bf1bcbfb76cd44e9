"""OrchestratorOptions: the pipeline's flags, with environment-variable fallbacks for deployment."""

from __future__ import annotations

import os

from apache_beam.options.pipeline_options import PipelineOptions


def _env(name: str, default):
    return os.environ.get(name) or default


class OrchestratorOptions(PipelineOptions):
    """Flags of the TSC orchestrator; each falls back to an environment variable where named."""

    @classmethod
    def _add_argparse_args(cls, parser):
        add = parser.add_argument
        # Local mode.
        add('--input', default=None,
            help='Local mode: file of one message per line (read as bytes). '
                 'Without it the pipeline reads Kafka (--bootstrap_servers).')
        add('--jobs_out', default='jobs.jsonl',
            help='Local mode: JSON Lines file of job records (exactly this path).')
        add('--dead_letter_out', default='dead_letters.jsonl',
            help='Local mode: JSON Lines file of dead letters (exactly this path).')
        # Configuration service.
        add('--tsc_config_url', default=_env('TSC_CONFIG_URL', None),
            help='Base URL of the TSC configuration service [TSC_CONFIG_URL].')
        add('--tsc_config_path', default=_env('TSC_CONFIG_PATH',
                                               '/customers/{customerId}/tscs/{tscId}/configuration'),
            help='URL path template with {customerId} and {tscId} [TSC_CONFIG_PATH].')
        add('--tsc_config_attempts', type=int, default=3,
            help='Attempts per configuration GET, in all (default 3).')
        add('--tsc_config_backoff_seconds', type=float, default=1.0,
            help='First backoff between attempts; doubles after each (default 1.0).')
        add('--tsc_config_timeout_seconds', type=float, default=10.0,
            help='Connect/read timeout of one GET (default 10).')
        add('--tsc_config_max_retry_after_seconds', type=float, default=30.0,
            help='Cap on a Retry-After the service asks for (default 30).')
        add('--tsc_config_concurrency', type=int, default=16,
            help='Concurrent GETs per worker (default 16).')
        add('--tsc_config_token_file', default=_env('TSC_CONFIG_TOKEN_FILE', None),
            help='File holding a bearer token for the service [TSC_CONFIG_TOKEN_FILE]; '
                 'TSC_CONFIG_TOKEN is read from the environment too. Never logged.')
        # Warehouse.
        add('--warehouse', default=_env('WAREHOUSE_URL', 'sqlite:///orchestrator.db'),
            help='sqlite:///PATH (embedded default) or impala://[user@]host:port/db?auth=… '
                 '[WAREHOUSE_URL]. Impala secrets: IMPALA_PASSWORD(_FILE), IMPALA_JWT_FILE.')
        add('--impala_clusters', default=_env('IMPALA_CLUSTERS', None),
            help='YAML file declaring several Impala clusters (name -> URL and where its '
                 'secrets are, plus a default) [IMPALA_CLUSTERS]. A configuration\'s '
                 'impalaCluster picks one; it replaces --warehouse.')
        add('--impala_max_rows_per_statement', type=int, default=1000,
            help='Rows per multi-row Impala statement (default 1000).')
        add('--impala_max_statement_bytes', type=int, default=4 * 1024 * 1024,
            help='Bytes per Impala statement; Impala refuses more than 16 MiB (default 4 MiB).')
        add('--create_tables', action='store_true', default=False,
            help='Create the warehouse tables if missing, then exit.')
        # Jobs.
        add('--job_image', default=_env('JOB_IMAGE', None),
            help='Container image of the CronJobs when the config names none [JOB_IMAGE].')
        add('--job_namespace', default=_env('JOB_NAMESPACE', 'default'),
            help='Namespace of the CronJobs when the config names none [JOB_NAMESPACE].')
        # Stages.
        add('--max_message_bytes', type=int, default=1024 * 1024,
            help='Larger messages are dead letters at stage parse (default 1 MiB).')
        add('--batch_size', type=int, default=2000,
            help='Messages per batch for the REST and warehouse stages (default 2000).')
        add('--max_batch_delay_seconds', type=float, default=0.5,
            help='Streaming: longest a message waits for its batch (default 0.5).')
        add('--num_shards', type=int, default=8,
            help='Shards of the (customerId, tscId) key space (default 8).')
        # Kafka mode.
        add('--bootstrap_servers', default=_env('KAFKA_BOOTSTRAP_SERVERS', None),
            help='Kafka bootstrap servers [KAFKA_BOOTSTRAP_SERVERS].')
        add('--orchestrator_topic', default=_env('ORCHESTRATOR_TOPIC', 'orchestrator'),
            help='Topic of the requests [ORCHESTRATOR_TOPIC].')
        add('--job_orchestrator_topic', default=_env('JOB_ORCHESTRATOR_TOPIC', 'job-orchestrator'),
            help='Topic of the job records [JOB_ORCHESTRATOR_TOPIC].')
        add('--dead_letter_topic', default=_env('DEAD_LETTER_TOPIC', None),
            help='Topic of the dead letters [DEAD_LETTER_TOPIC]; default <orchestrator topic>.dlq.')
        add('--consumer_group', default=_env('CONSUMER_GROUP', 'tsc-orchestrator'),
            help='Kafka consumer group [CONSUMER_GROUP].')
        add('--auto_offset_reset', default=_env('AUTO_OFFSET_RESET', 'earliest'),
            choices=('earliest', 'latest'),
            help='Where a new consumer group starts [AUTO_OFFSET_RESET] (default earliest).')
        add('--kafka_expansion_service', default=_env('KAFKA_EXPANSION_SERVICE', None),
            help='host:port of the Beam Java expansion service with KafkaIO '
                 '[KAFKA_EXPANSION_SERVICE] (make up starts one).')
        add('--kafka_config', action='append', default=None, metavar='KEY=VALUE',
            help='Extra Kafka client property for consumer and producers, repeatable (e.g. '
                 'security.protocol=SASL_SSL). KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_MECHANISM, '
                 'KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD(_FILE) are read from the '
                 'environment; secrets never go on the command line.')
        add('--kafka_max_records', type=int, default=None,
            help='Bounded Kafka read: stop after this many records (the local runner needs '
                 'a bound).')
        add('--kafka_max_read_time_seconds', type=int, default=None,
            help='Bounded Kafka read: stop after this many seconds.')
        add('--log_level', default=_env('LOG_LEVEL', 'INFO'),
            help='DEBUG, INFO, WARNING or ERROR [LOG_LEVEL].')
