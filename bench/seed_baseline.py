"""seed_baseline: the old service's loop, one message at a time, as plain Python.

For each line of the input: parse, GET the configuration (requests + tenacity: at most 3
attempts, exponential backoff), one single-row UPSERT into ``tsc_configurations`` over
impyla (a delete reads the stored row, then deletes it), render the CronJob, write the job
record, one single-row UPSERT into ``processed_data``, next. Failures become dead letters
(the seed only logged them; they are written here so the outputs can be compared).

It reuses the pipeline's pure functions (parse_message, validate_config, frequency_to_cron,
create_job, configuration_row, processed_row, impala_literal, dead_letter) so the semantics
are identical, but none of its Beam stages, batching or concurrency. Being charitable to the
seed, it keeps one HTTP session and one Impala connection for the whole run.

python -m bench.seed_baseline --input messages.jsonl --tsc_config_url http://127.0.0.1:P \
    --warehouse impala://127.0.0.1:Q/default --jobs_out jobs.jsonl \
    --dead_letter_out dead.jsonl --stats_out stats.json --job_image IMAGE
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import requests
import tenacity

from pipeline import handlers
from transforms.cronjob_builder import create_job, frequency_to_cron
from transforms.dead_letters import dead_letter
from transforms.impala_module import configuration_row, processed_row
from transforms.impala_writer import impala_literal, parse_impala_url
from transforms.local_io import read_message_lines, record_to_json
from transforms.parser import InvalidMessageError, parse_message
from transforms.records import KafkaRecord, Message, SourceRecord, format_timestamp, utc_now
from transforms.tsc_config_client import (
    RETRYABLE_STATUS,
    InvalidTscConfigError,
    TscConfigError,
    TscConfigHttpError,
    TscConfigNotFoundError,
    TscConfigResponseError,
    TscConfigUnavailableError,
    build_url,
    validate_config,
)
from transforms.warehouse import PROCESSED_DATA, TSC_CONFIGURATIONS


class Warehouse(Protocol):
    def upsert(self, table: str, columns: tuple[str, ...], row: dict[str, Any]) -> None: ...

    def stored_config(self, customer_id: str, tsc_id: str) -> str | None: ...

    def delete(self, customer_id: str, tsc_id: str) -> None: ...


class SeedLoop:
    """The seed's ``process_message``: every stage for one message, then the next."""

    def __init__(self, fetch: Callable[[str, str], Any], warehouse: Warehouse, *,
                 emit_job: Callable[[KafkaRecord], None],
                 emit_dead_letter: Callable[[KafkaRecord], None],
                 job_namespace: str, job_image: str, max_message_bytes: int,
                 render: Callable[..., KafkaRecord] = create_job,
                 to_cron: Callable[[str], str] = frequency_to_cron,
                 validate: Callable[[Any, str, str], dict[str, Any]] = validate_config):
        self._fetch = fetch
        self._validate = validate
        self._render = render
        self._to_cron = to_cron
        self._warehouse = warehouse
        self._emit_job = emit_job
        self._emit_dead_letter = emit_dead_letter
        self._job_namespace = job_namespace
        self._job_image = job_image
        self._max_message_bytes = max_message_bytes
        self._operations = handlers.operations()

    def _dead(self, source: SourceRecord, stage: str, error: BaseException, **extra) -> None:
        self._emit_dead_letter(dead_letter(source, stage, error, **extra))

    def process(self, record: SourceRecord) -> None:
        try:
            message: Message = parse_message(record, operations=self._operations,
                                             max_message_bytes=self._max_message_bytes)
        except InvalidMessageError as e:
            self._dead(record, 'parse', e)
            return
        handler = handlers.OPERATION_HANDLERS[message.operation]
        if handler.needs_config:
            try:
                config = self._validate(self._fetch(message.customer_id, message.tsc_id),
                                         message.customer_id, message.tsc_id)
            except (TscConfigError, InvalidTscConfigError) as e:
                self._dead(record, e.stage, e, attempts=e.attempts)
                return
            message.config = config
            message.cron_schedule = self._to_cron(config['frequency'])
        now = format_timestamp(utc_now())
        try:
            if handler.deletes:
                stored = self._warehouse.stored_config(message.customer_id, message.tsc_id)
                if stored:
                    message.config = json.loads(stored)
                self._warehouse.delete(message.customer_id, message.tsc_id)
            else:
                self._warehouse.upsert(TSC_CONFIGURATIONS.name, TSC_CONFIGURATIONS.column_names,
                                       configuration_row(message, now))
        except Exception as e:  # noqa: BLE001 - the seed logged and went on; we dead-letter
            self._dead(record, 'upsert', e)
            return
        try:
            job = self._render(action=handler.job_action, operation=message.operation,
                             customer_id=message.customer_id, tsc_id=message.tsc_id,
                             config=message.config, schedule=message.cron_schedule,
                             default_namespace=self._job_namespace,
                             default_image=self._job_image)
        except (ValueError, KeyError) as e:
            self._dead(record, 'render', e)
            return
        self._emit_job(job)
        try:
            self._warehouse.upsert(PROCESSED_DATA.name, PROCESSED_DATA.column_names,
                                   processed_row(message, now))
        except Exception as e:  # noqa: BLE001
            self._dead(record, 'archive', e)


# ------------------------------------------------------------------ the real IO of the seed


class HttpConfigFetcher:
    """GET with tenacity, the seed's way: at most ``attempts``, exponential backoff."""

    def __init__(self, base_url: str, *, attempts: int = 3, backoff_seconds: float = 1.0,
                 timeout_seconds: float = 10.0):
        self._base_url = base_url
        self._timeout = timeout_seconds
        self._session = requests.Session()
        self.requests_sent = 0
        self._retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(attempts),
            wait=tenacity.wait_exponential(multiplier=backoff_seconds),
            retry=tenacity.retry_if_exception(
                lambda e: isinstance(e, TscConfigUnavailableError)
                or (isinstance(e, TscConfigHttpError) and e.status in RETRYABLE_STATUS)),
            reraise=True)

    def __call__(self, customer_id: str, tsc_id: str) -> Any:
        url = build_url(self._base_url, '/customers/{customerId}/tscs/{tscId}/configuration',
                        customer_id, tsc_id)
        retrying = self._retrying.copy()
        try:
            return retrying(self._get, url)
        except TscConfigError as e:
            e.attempts = retrying.statistics.get('attempt_number', 1)
            raise

    def _get(self, url: str) -> Any:
        self.requests_sent += 1
        try:
            # Sent as built: requests would re-quote %2E in '.'/'..' ids into dot segments.
            request = self._session.prepare_request(requests.Request('GET', url))
            request.url = url
            response = self._session.send(request, timeout=self._timeout)
        except requests.RequestException as e:
            raise TscConfigUnavailableError(f'configuration service unreachable: {e}') from e
        if response.status_code == 404:
            raise TscConfigNotFoundError('no configuration (HTTP 404)')
        if response.status_code >= 400:
            raise TscConfigHttpError(f'HTTP {response.status_code}', status=response.status_code)
        try:
            body = response.json()
        except ValueError as e:
            raise TscConfigResponseError('configuration is not JSON') from e
        if not isinstance(body, dict):
            raise TscConfigResponseError('configuration is not a JSON object')
        return body

    def close(self) -> None:
        self._session.close()


class ImpylaWarehouse:
    """One impyla connection; every call is one single-row statement."""

    def __init__(self, url: str):
        from impala import dbapi

        settings = parse_impala_url(url)
        self._database = settings.database
        self._connection = dbapi.connect(host=settings.host, port=settings.port,
                                         database=settings.database, auth_mechanism='NOSASL')
        # One cursor for the run: impyla sends 'USE <database>' each time a cursor opens,
        # which would double the seed's round trips.
        self._cursor = self._connection.cursor()
        self.statements_executed = 0

    def _execute(self, sql: str, fetch: bool = False) -> list[tuple]:
        self._cursor.execute(sql)
        self.statements_executed += 1
        return self._cursor.fetchall() if fetch else []

    def upsert(self, table, columns, row):
        values = ', '.join(impala_literal(row[name]) for name in columns)
        self._execute(f'UPSERT INTO {self._database}.{table} ({", ".join(columns)}) '
                      f'VALUES ({values})')

    def _where(self, customer_id: str, tsc_id: str) -> str:
        return f'customer_id = {impala_literal(customer_id)} AND tsc_id = {impala_literal(tsc_id)}'

    def stored_config(self, customer_id, tsc_id):
        rows = self._execute(f'SELECT config FROM {self._database}.{TSC_CONFIGURATIONS.name} '
                             f'WHERE {self._where(customer_id, tsc_id)}', fetch=True)
        return rows[0][0] if rows else None

    def delete(self, customer_id, tsc_id):
        self._execute(f'DELETE FROM {self._database}.{TSC_CONFIGURATIONS.name} '
                      f'WHERE {self._where(customer_id, tsc_id)}')

    def close(self) -> None:
        self._cursor.close()
        self._connection.close()


# ------------------------------------------------------------------ the in-memory oracle


class MemoryWarehouse:
    """Both tables as dicts: the expected state, computed without any IO."""

    def __init__(self):
        self.tables: dict[str, dict[tuple, dict[str, Any]]] = {
            TSC_CONFIGURATIONS.name: {}, PROCESSED_DATA.name: {}}

    def upsert(self, table, columns, row):
        primary_key = (TSC_CONFIGURATIONS if table == TSC_CONFIGURATIONS.name
                       else PROCESSED_DATA).primary_key
        self.tables[table][tuple(row[name] for name in primary_key)] = dict(row)

    def stored_config(self, customer_id, tsc_id):
        row = self.tables[TSC_CONFIGURATIONS.name].get((customer_id, tsc_id))
        return row['config'] if row else None

    def delete(self, customer_id, tsc_id):
        self.tables[TSC_CONFIGURATIONS.name].pop((customer_id, tsc_id), None)


def catalogue_fetcher(entries: Iterable[dict]) -> Callable[[str, str], Any]:
    """What the sample config server answers, as a function."""
    index = {(entry['customerId'], entry['tscId']): entry for entry in entries}

    def fetch(customer_id: str, tsc_id: str) -> Any:
        entry = index.get((customer_id, tsc_id))
        if entry is None:
            raise TscConfigNotFoundError('no configuration (HTTP 404)', attempts=1)
        return entry

    return fetch


def _memoized_validate_config() -> Callable[[Any, str, str], dict[str, Any]]:
    # validate_config is pure: checking a configuration once is the same as each time.
    checked: dict[str, dict | InvalidTscConfigError] = {}

    def validate(config: Any, customer_id: str, tsc_id: str) -> dict[str, Any]:
        key = json.dumps([config, customer_id, tsc_id], sort_keys=True)
        if key not in checked:
            try:
                checked[key] = validate_config(json.loads(json.dumps(config)), customer_id,
                                               tsc_id)
            except InvalidTscConfigError as e:
                checked[key] = e
        result = checked[key]
        if isinstance(result, InvalidTscConfigError):
            raise result
        return json.loads(json.dumps(result))

    return validate


def _memoized_create_job() -> Callable[..., KafkaRecord]:
    # Messages of one key with one configuration render the same record: render it once.
    cache: dict[str, KafkaRecord | Exception] = {}

    def render(**kwargs: Any) -> KafkaRecord:
        key = json.dumps(kwargs, sort_keys=True, ensure_ascii=False)
        if key not in cache:
            try:
                cache[key] = create_job(**kwargs)
            except (ValueError, KeyError) as e:
                cache[key] = e
        result = cache[key]
        if isinstance(result, Exception):
            raise result
        return result

    return render


def expected_outputs(input_path: str, catalogue_path: str, *, job_namespace: str,
                     job_image: str, max_message_bytes: int):
    """Runs the loop against the catalogue and in-memory tables: (tables, jobs, dead letters)."""
    with open(catalogue_path, encoding='utf-8') as handle:
        entries = json.load(handle)
    warehouse = MemoryWarehouse()
    jobs: list[KafkaRecord] = []
    dead: list[KafkaRecord] = []
    loop = SeedLoop(catalogue_fetcher(entries), warehouse, emit_job=jobs.append,
                    emit_dead_letter=dead.append, job_namespace=job_namespace,
                    job_image=job_image, max_message_bytes=max_message_bytes,
                    render=_memoized_create_job(), to_cron=functools.lru_cache(frequency_to_cron),
                    validate=_memoized_validate_config())
    for record in read_message_lines(input_path):
        loop.process(record)
    return warehouse.tables, jobs, dead


# ------------------------------------------------------------------ CLI


def _percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method='inclusive')[round(fraction * 100) - 1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add('--input', required=True, help='Message file, one message per line.')
    add('--limit', type=int, default=None, help='Process only the first N lines.')
    add('--tsc_config_url', required=True)
    add('--tsc_config_attempts', type=int, default=3)
    add('--tsc_config_backoff_seconds', type=float, default=1.0)
    add('--warehouse', required=True, help='impala://host:port/db (NOSASL).')
    add('--jobs_out', required=True)
    add('--dead_letter_out', required=True)
    add('--stats_out', required=True, help='JSON: messages, seconds, latencies, counters.')
    add('--job_image', required=True)
    add('--job_namespace', default='default')
    add('--max_message_bytes', type=int, default=1024 * 1024)
    args = parser.parse_args(argv)

    fetcher = HttpConfigFetcher(args.tsc_config_url, attempts=args.tsc_config_attempts,
                                backoff_seconds=args.tsc_config_backoff_seconds)
    warehouse = ImpylaWarehouse(args.warehouse)
    latencies_ms: list[float] = []
    count = 0
    with open(args.jobs_out, 'w', encoding='utf-8') as jobs, \
            open(args.dead_letter_out, 'w', encoding='utf-8') as dead:

        def emit(handle):
            def write(record: KafkaRecord) -> None:
                handle.write(record_to_json(record) + '\n')
                handle.flush()  # the seed produced (and flushed) each record before the next
            return write

        loop = SeedLoop(fetcher, warehouse, emit_job=emit(jobs), emit_dead_letter=emit(dead),
                        job_namespace=args.job_namespace, job_image=args.job_image,
                        max_message_bytes=args.max_message_bytes)
        started = time.perf_counter()
        for record in read_message_lines(args.input):
            if args.limit is not None and count >= args.limit:
                break
            begin = time.perf_counter()
            loop.process(record)
            latencies_ms.append((time.perf_counter() - begin) * 1000.0)
            count += 1
        seconds = time.perf_counter() - started
    fetcher.close()
    warehouse.close()
    stats = {
        'messages': count, 'loop_seconds': seconds,
        'messages_per_s': count / seconds if seconds else None,
        'p50_ms': _percentile(latencies_ms, 0.50), 'p99_ms': _percentile(latencies_ms, 0.99),
        'rest_requests': fetcher.requests_sent, 'sql_statements': warehouse.statements_executed,
    }
    with open(args.stats_out, 'w', encoding='utf-8') as handle:
        json.dump(stats, handle)
    print(json.dumps(stats))
    return 0


if __name__ == '__main__':
    sys.exit(main())
