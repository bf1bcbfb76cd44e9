"""ImpalaWriter: batched multi-row statements to Impala (Kudu) over impyla's HiveServer2 client."""

from __future__ import annotations

import dataclasses
import logging
import os
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import tenacity

from transforms.warehouse import (
    PROCESSED_DATA,
    TABLES,
    TSC_CONFIGURATIONS,
    RejectedRowsError,
    StoredState,
    Table,
    TransientWarehouseError,
    WarehouseWriter,
    check_identifier,
    impala_ddl,
)

_LOGGER = logging.getLogger(__name__)

AUTH_MECHANISMS = ('NOSASL', 'PLAIN', 'LDAP', 'GSSAPI', 'JWT')
# Impala's MAX_STATEMENT_LENGTH_BYTES defaults to 16 MiB; stay far below it.
DEFAULT_MAX_STATEMENT_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_ROWS_PER_STATEMENT = 1000
# Messages of errors that mean the session or connection is gone, not that the rows are bad.
_TRANSIENT_MARKERS = ('invalid session', 'session expired', 'session closed',
                      'client session expired', 'invalid query handle', 'connection',
                      'timed out', 'unavailable')

_ESCAPES = {'\\': '\\\\', "'": "\\'", '"': '\\"', '\n': '\\n', '\r': '\\r', '\t': '\\t',
            '\0': '\\0', '\b': '\\b', '\x1a': '\\Z'}


def impala_literal(value: Any) -> str:
    """Renders ``value`` as an Impala SQL literal.

    Strings use Impala's backslash escapes, so quotes, backslashes, newlines and NUL
    round-trip; ``%``, ``?`` and ``:name`` need no escaping because statements are
    sent without client-side parameter substitution.
    """
    if value is None:
        return 'NULL'
    if isinstance(value, bool):
        return 'TRUE' if value else 'FALSE'
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return "'" + ''.join(_ESCAPES.get(ch, ch) for ch in value) + "'"
    raise TypeError(f'no Impala literal for {type(value).__name__}')


@dataclasses.dataclass(frozen=True)
class ImpalaSettings:
    """Connection settings parsed from an ``impala://`` URL; secrets come from the environment."""

    host: str
    port: int
    database: str
    user: str | None = None
    auth: str = 'NOSASL'
    ssl: bool = False
    ca_cert: str | None = None
    http: bool = False
    http_path: str = ''
    timeout: float | None = None

    def redacted(self) -> str:
        user = f'{self.user}@' if self.user else ''
        return f'impala://{user}{self.host}:{self.port}/{self.database}?auth={self.auth}'


def parse_impala_url(url: str) -> ImpalaSettings:
    """Parses ``impala://[user@]host:port/database?auth=…&ssl=…&ca_cert=…&http=…&http_path=…&timeout=…``.

    Raises:
        ValueError: saying which part is wrong. A password in the URL is refused:
            use ``IMPALA_PASSWORD`` or ``IMPALA_PASSWORD_FILE``.
    """
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme != 'impala' or not parsed.hostname:
        raise ValueError('--warehouse impala URL must look like impala://[user@]host:port/database')
    if parsed.password:
        raise ValueError('do not put a password in the impala URL; '
                         'set IMPALA_PASSWORD or IMPALA_PASSWORD_FILE instead')
    database = parsed.path.strip('/') or 'default'
    check_identifier(database)
    query = dict(urllib.parse.parse_qsl(parsed.query, keep_blank_values=True))
    unknown = set(query) - {'auth', 'ssl', 'ca_cert', 'http', 'http_path', 'timeout'}
    if unknown:
        raise ValueError(f'unknown impala URL parameters {sorted(unknown)}')
    auth = query.get('auth', 'NOSASL').upper()
    if auth not in AUTH_MECHANISMS:
        raise ValueError(f'impala URL auth must be one of {AUTH_MECHANISMS}, got {auth!r}')
    try:
        port = parsed.port or 21050
        timeout = float(query['timeout']) if query.get('timeout') else None
    except ValueError as e:
        raise ValueError(f'impala URL has a bad port or timeout: {e}') from e
    return ImpalaSettings(
        host=parsed.hostname, port=port, database=database,
        user=urllib.parse.unquote(parsed.username) if parsed.username else None, auth=auth,
        ssl=_flag(query.get('ssl')), ca_cert=query.get('ca_cert') or None,
        http=_flag(query.get('http')), http_path=query.get('http_path', ''), timeout=timeout)


def _flag(value: str | None) -> bool:
    return (value or '').lower() in ('1', 'true', 'yes')


def _read_secret(variable: str, file_variable: str) -> str | None:
    if os.environ.get(variable):
        return os.environ[variable]
    path = os.environ.get(file_variable)
    if path:
        with open(path, encoding='utf-8') as handle:
            return handle.read().strip()
    return None


def chunk_rows(rendered: Sequence[str], *, prefix_bytes: int, max_rows: int,
               max_bytes: int) -> Iterator[list[str]]:
    """Groups rendered rows so each statement stays under ``max_rows`` and ``max_bytes``.

    Raises:
        RejectedRowsError: one row alone does not fit in a statement.
    """
    chunk: list[str] = []
    size = prefix_bytes
    for row in rendered:
        row_bytes = len(row.encode('utf-8')) + 2
        if prefix_bytes + row_bytes > max_bytes:
            raise RejectedRowsError(f'a row of {row_bytes} bytes does not fit in a statement of '
                                    f'at most {max_bytes} bytes')
        if chunk and (len(chunk) >= max_rows or size + row_bytes > max_bytes):
            yield chunk
            chunk, size = [], prefix_bytes
        chunk.append(row)
        size += row_bytes
    if chunk:
        yield chunk


class ImpalaWriter(WarehouseWriter):
    """Writes to Impala on Kudu with multi-row ``UPSERT`` statements and batched deletes.

    The connection opens lazily and reopens after a lost connection or an expired
    session; a transient failure is retried with backoff, a bounded number of times.
    A statement rejected for its content raises ``RejectedRowsError`` so the caller
    can split the batch and isolate the bad rows.
    """

    def __init__(self, settings: ImpalaSettings, *, attempts: int = 4,
                 backoff_seconds: float = 0.5,
                 max_rows_per_statement: int = DEFAULT_MAX_ROWS_PER_STATEMENT,
                 max_statement_bytes: int = DEFAULT_MAX_STATEMENT_BYTES):
        self._settings = settings
        self._attempts = attempts
        self._backoff_seconds = backoff_seconds
        self._max_rows = max_rows_per_statement
        self._max_bytes = max_statement_bytes
        self._connection = None
        self.statements_executed = 0
        if settings.ssl and not settings.ca_cert:
            _LOGGER.warning('TLS to %s:%s without ca_cert: the server certificate is NOT verified',
                            settings.host, settings.port)

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> 'ImpalaWriter':
        return cls(parse_impala_url(url), **kwargs)

    def _connect(self):
        from impala import dbapi

        s = self._settings
        kwargs: dict[str, Any] = dict(
            host=s.host, port=s.port, database=s.database, timeout=s.timeout,
            use_ssl=s.ssl, ca_cert=s.ca_cert, verify_cert=bool(s.ssl and s.ca_cert),
            auth_mechanism=s.auth, user=s.user, use_http_transport=s.http, http_path=s.http_path)
        if s.auth in ('PLAIN', 'LDAP'):
            kwargs['password'] = _read_secret('IMPALA_PASSWORD', 'IMPALA_PASSWORD_FILE')
        if s.auth == 'JWT':
            kwargs['jwt'] = _read_secret('IMPALA_JWT', 'IMPALA_JWT_FILE')
        _LOGGER.info('connecting to %s', s.redacted())
        return dbapi.connect(**kwargs)

    def close(self) -> None:
        if self._connection is not None:
            try:
                self._connection.close()
            except Exception as e:  # noqa: BLE001 - closing a dead connection may fail any way
                _LOGGER.debug('closing impala connection failed: %s', e)
            self._connection = None

    def _execute_once(self, sql: str, fetch: bool) -> list[tuple]:
        from impala.error import HiveServer2Error, RPCError

        try:
            if self._connection is None:
                self._connection = self._connect()
            cursor = self._connection.cursor()
            try:
                cursor.execute(sql)
                self.statements_executed += 1
                return cursor.fetchall() if fetch else []
            finally:
                try:
                    cursor.close()
                except (RPCError, OSError, EOFError) as e:
                    _LOGGER.debug('closing impala cursor failed: %s', e)
        except HiveServer2Error as e:
            if any(marker in str(e).lower() for marker in _TRANSIENT_MARKERS):
                self.close()
                raise TransientWarehouseError(f'impala session lost: {e}') from e
            raise RejectedRowsError(f'impala rejected the statement: {e}') from e
        except (TimeoutError, RPCError, OSError, EOFError) as e:
            self.close()
            raise TransientWarehouseError(f'impala connection lost: {type(e).__name__}: {e}') from e
        except Exception as e:
            # thrift's transport errors do not share a base with the DB-API errors.
            if type(e).__module__.startswith('thrift'):
                self.close()
                raise TransientWarehouseError(f'impala connection lost: {e}') from e
            raise

    def execute(self, sql: str, *, fetch: bool = False) -> list[tuple]:
        """Runs one statement, reconnecting and retrying transient failures."""
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self._attempts),
            wait=tenacity.wait_exponential(multiplier=self._backoff_seconds),
            retry=tenacity.retry_if_exception_type(TransientWarehouseError),
            reraise=True)
        return retrying(self._execute_once, sql, fetch)

    def _table(self, table: Table) -> str:
        return f'{self._settings.database}.{table.name}'

    def create_tables(self) -> None:
        for table in TABLES:
            self.execute(impala_ddl(table, self._settings.database))

    def read_tsc_states(self, keys):
        states = {}
        keys = list(keys)
        prefix = ('SELECT customer_id, tsc_id, source_topic, source_partition, source_offset, '
                  f'config FROM {self._table(TSC_CONFIGURATIONS)} WHERE ')
        conditions = [f'(customer_id = {impala_literal(c)} AND tsc_id = {impala_literal(t)})'
                      for c, t in keys]
        for chunk in chunk_rows(conditions, prefix_bytes=len(prefix), max_rows=self._max_rows,
                                max_bytes=self._max_bytes):
            for row in self.execute(prefix + ' OR '.join(chunk), fetch=True):
                states[(row[0], row[1])] = StoredState(row[2], int(row[3]), int(row[4]), row[5])
        return states

    def _upsert(self, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
        prefix = f'UPSERT INTO {self._table(table)} ({", ".join(table.column_names)}) VALUES '
        rendered = ['(' + ', '.join(impala_literal(row[name]) for name in table.column_names) + ')'
                    for row in rows]
        for chunk in chunk_rows(rendered, prefix_bytes=len(prefix), max_rows=self._max_rows,
                                max_bytes=self._max_bytes):
            self.execute(prefix + ', '.join(chunk))

    def upsert_tsc_configurations(self, rows):
        self._upsert(TSC_CONFIGURATIONS, rows)

    def upsert_processed_data(self, rows):
        self._upsert(PROCESSED_DATA, rows)

    def delete_tsc_configurations(self, rows):
        prefix = f'DELETE FROM {self._table(TSC_CONFIGURATIONS)} WHERE '
        conditions = [
            f'(customer_id = {impala_literal(r["customer_id"])} '
            f'AND tsc_id = {impala_literal(r["tsc_id"])} '
            f'AND NOT (source_topic = {impala_literal(r["source_topic"])} '
            f'AND source_partition = {int(r["source_partition"])} '
            f'AND source_offset > {int(r["source_offset"])}))'
            for r in rows]
        for chunk in chunk_rows(conditions, prefix_bytes=len(prefix), max_rows=self._max_rows,
                                max_bytes=self._max_bytes):
            self.execute(prefix + ' OR '.join(chunk))
