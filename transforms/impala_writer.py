"""ImpalaWriter: batched multi-row statements to Impala (Kudu) over impyla's HiveServer2 client."""

from __future__ import annotations

import dataclasses
import json
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
# Impala refuses expression trees deeper than 1000; an OR chain of N terms is N deep.
MAX_OR_TERMS = 250
# Messages of errors that mean the session or connection is gone, not that the rows are bad.
_TRANSIENT_MARKERS = ('invalid session', 'session expired', 'session closed',
                      'client session expired', 'invalid query handle', 'connection',
                      'timed out', 'unavailable')

_ESCAPES = str.maketrans({'\\': '\\\\', "'": "\\'", '"': '\\"', '\n': '\\n', '\r': '\\r',
                         '\t': '\\t', '\0': '\\0', '\b': '\\b', '\x1a': '\\Z'})


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
        return "'" + value.translate(_ESCAPES) + "'"
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
    if timeout is not None and not 0 < timeout < float('inf'):
        # 0 would make the socket non-blocking; NaN and infinity are no timeouts either.
        raise ValueError(f'impala URL timeout must be a positive number of seconds, got {timeout}')
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
               max_bytes: int, separator_bytes: int = 2) -> Iterator[list[str]]:
    """Groups rendered rows so each statement stays under ``max_rows`` and ``max_bytes``.

    A statement is the prefix and the chunk's rows joined by a separator of
    ``separator_bytes`` (``', '`` between VALUES tuples, ``' OR '`` between conditions).

    Raises:
        RejectedRowsError: one row alone does not fit in a statement.
    """
    chunk: list[str] = []
    size = prefix_bytes
    for row in rendered:
        row_bytes = len(row.encode('utf-8'))
        if prefix_bytes + row_bytes > max_bytes:
            raise RejectedRowsError(f'a row of {row_bytes} bytes does not fit in a statement of '
                                    f'at most {max_bytes} bytes')
        if chunk and (len(chunk) >= max_rows or size + separator_bytes + row_bytes > max_bytes):
            yield chunk
            chunk, size = [], prefix_bytes
        size += row_bytes + (separator_bytes if chunk else 0)
        chunk.append(row)
    if chunk:
        yield chunk


class ImpalaWriter(WarehouseWriter):
    """Writes to Impala on Kudu with multi-row ``UPSERT`` statements and batched deletes.

    The connection opens lazily and reopens after a lost connection or an expired
    session; a transient failure is retried with backoff, a bounded number of times.
    A statement rejected for its content raises ``RejectedRowsError`` so the caller
    can split the batch and isolate the bad rows.
    """

    def __init__(self, settings: ImpalaSettings, *, secrets: ImpalaCluster | None = None,
                 attempts: int = 4, backoff_seconds: float = 0.5,
                 max_rows_per_statement: int = DEFAULT_MAX_ROWS_PER_STATEMENT,
                 max_statement_bytes: int = DEFAULT_MAX_STATEMENT_BYTES):
        self._settings = settings
        self._secrets = secrets
        self._attempts = attempts
        self._backoff_seconds = backoff_seconds
        self._max_rows = max_rows_per_statement
        self._max_bytes = max_statement_bytes
        self._connection = None
        self._cursor = None
        self.statements_executed = 0
        self._credentials()
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
        kwargs.update(self._credentials())
        _LOGGER.info('connecting to %s', s.redacted())
        return dbapi.connect(**kwargs)

    def _credentials(self) -> dict[str, str]:
        """The secret the auth mechanism needs; raises ValueError when it is not configured.

        impyla would otherwise send the literal password 'password' for PLAIN.
        """
        s = self._settings
        if s.auth in ('PLAIN', 'LDAP'):
            password = self._secret('password', 'IMPALA_PASSWORD', 'IMPALA_PASSWORD_FILE')
            if not password:
                raise ValueError(f'{s.redacted()} needs a password: set IMPALA_PASSWORD or '
                                 'IMPALA_PASSWORD_FILE (or the cluster\'s password_env/_file)')
            return {'password': password}
        if s.auth == 'JWT':
            token = self._secret('jwt', 'IMPALA_JWT', 'IMPALA_JWT_FILE')
            if not token:
                raise ValueError(f'{s.redacted()} needs a token: set IMPALA_JWT_FILE '
                                 '(or the cluster\'s jwt_file)')
            return {'jwt': token}
        return {}

    def _secret(self, kind: str, variable: str, file_variable: str) -> str | None:
        cluster = self._secrets
        if cluster is not None:
            if kind == 'password' and cluster.password_env and os.environ.get(cluster.password_env):
                return os.environ[cluster.password_env]
            path = cluster.password_file if kind == 'password' else cluster.jwt_file
            if path:
                with open(path, encoding='utf-8') as handle:
                    return handle.read().strip()
        return _read_secret(variable, file_variable)

    def close(self) -> None:
        for resource in (self._cursor, self._connection):
            if resource is not None:
                try:
                    resource.close()
                except Exception as e:  # noqa: BLE001 - closing a dead connection may fail any way
                    _LOGGER.debug('closing impala %s failed: %s', type(resource).__name__, e)
        self._cursor = None
        self._connection = None

    def _execute_once(self, sql: str, fetch: bool) -> list[tuple]:
        from impala.error import DatabaseError, HiveServer2Error, RPCError

        try:
            if self._connection is None:
                self._connection = self._connect()
            if self._cursor is None:
                # One cursor is one HiveServer2 session: keep it for every statement.
                self._cursor = self._connection.cursor()
            self._cursor.execute(sql)
            self.statements_executed += 1
            return self._cursor.fetchall() if fetch else []
        except (HiveServer2Error, DatabaseError) as e:
            # HiveServer2Error: refused at ExecuteStatement (e.g. AnalysisException);
            # OperationalError (a DatabaseError): the query ended in ERROR_STATE while running.
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
        for chunk in chunk_rows(conditions, prefix_bytes=len(prefix),
                                max_rows=min(self._max_rows, MAX_OR_TERMS),
                                max_bytes=self._max_bytes, separator_bytes=len(' OR ')):
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
        for chunk in chunk_rows(conditions, prefix_bytes=len(prefix),
                                max_rows=min(self._max_rows, MAX_OR_TERMS),
                                max_bytes=self._max_bytes, separator_bytes=len(' OR ')):
            self.execute(prefix + ' OR '.join(chunk))


@dataclasses.dataclass(frozen=True)
class ImpalaCluster:
    """One cluster of the deployment file: its URL and where its secrets are."""

    name: str
    url: str
    password_env: str | None = None
    password_file: str | None = None
    jwt_file: str | None = None


def load_impala_clusters(path: str) -> tuple[str, dict[str, ImpalaCluster]]:
    """Reads ``--impala_clusters``: the default cluster's name and every cluster by name.

    The file names secrets (an environment variable or a file per cluster), never holds them::

        default: main
        clusters:
          main: impala://etl@impala-a:21050/tsc?auth=LDAP&ssl=true&ca_cert=/etc/ssl/ca.pem
          eu:
            url: impala://etl@impala-eu:21050/tsc?auth=LDAP
            password_file: /var/run/secrets/impala-eu/password

    Raises:
        ValueError: saying what is wrong with the file.
    """
    import yaml

    try:
        with open(path, encoding='utf-8') as handle:
            document = yaml.safe_load(handle)
    except OSError as e:
        raise ValueError(f'cannot read --impala_clusters {path!r}: {e.strerror}') from e
    except yaml.YAMLError as e:
        raise ValueError(f'--impala_clusters {path!r} is not valid YAML: {e}') from e
    if not isinstance(document, dict) or not isinstance(document.get('clusters'), dict) \
            or not document['clusters']:
        raise ValueError(f'--impala_clusters {path!r} needs a non-empty "clusters" mapping')
    clusters = {}
    for name, entry in document['clusters'].items():
        if isinstance(entry, str):
            entry = {'url': entry}
        if not isinstance(entry, dict) or not isinstance(entry.get('url'), str):
            raise ValueError(f'--impala_clusters: cluster {name!r} needs a url')
        unknown = set(entry) - {'url', 'password_env', 'password_file', 'jwt_file'}
        if unknown:
            raise ValueError(f'--impala_clusters: cluster {name!r} has unknown keys '
                             f'{sorted(unknown)} (secrets go in password_env/password_file)')
        parse_impala_url(entry['url'])
        clusters[str(name)] = ImpalaCluster(name=str(name), **entry)
    default = document.get('default', next(iter(clusters)) if len(clusters) == 1 else None)
    if default not in clusters:
        raise ValueError(f'--impala_clusters: "default" must name one of {sorted(clusters)}')
    return default, clusters


class UnknownClusterError(RejectedRowsError):
    """A configuration names an Impala cluster the deployment file does not declare."""


class RoutedWarehouse(WarehouseWriter):
    """Routes ``tsc_configurations`` rows to the cluster their configuration's
    ``impalaCluster`` names (the default cluster when it names none).

    Connections open on first use, one per cluster. Deletes go to every cluster, since a
    delete request carries no configuration; they are conditional, so that is harmless.
    ``processed_data`` is the archive of the whole stream and lives in the default cluster.
    """

    def __init__(self, default: str, clusters: Mapping[str, ImpalaCluster], **writer_settings):
        self._default = default
        self._clusters = dict(clusters)
        self._writer_settings = writer_settings
        self._writers: dict[str, ImpalaWriter] = {}

    @property
    def statements_executed(self) -> int:
        return sum(writer.statements_executed for writer in self._writers.values())

    def _writer(self, name: str | None) -> ImpalaWriter:
        name = name or self._default
        if name not in self._clusters:
            raise UnknownClusterError(f'unknown impala cluster {name!r}; declared: '
                                      f'{sorted(self._clusters)}')
        if name not in self._writers:
            cluster = self._clusters[name]
            self._writers[name] = ImpalaWriter(
                parse_impala_url(cluster.url), secrets=cluster, **self._writer_settings)
        return self._writers[name]

    def _route(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
        routed: dict[str, list[Mapping[str, Any]]] = {}
        for row in rows:
            name = json.loads(row['config']).get('impalaCluster') or self._default
            self._writer(name)
            routed.setdefault(name, []).append(row)
        return routed

    def create_tables(self) -> None:
        for name in self._clusters:
            self._writer(name).create_tables()

    def read_tsc_states(self, keys):
        states = {}
        for name in self._clusters:
            states.update(self._writer(name).read_tsc_states(keys))
        return states

    def upsert_tsc_configurations(self, rows):
        for name, group in self._route(rows).items():
            self._writers[name].upsert_tsc_configurations(group)

    def delete_tsc_configurations(self, rows):
        for name in self._clusters:
            self._writer(name).delete_tsc_configurations(rows)

    def upsert_processed_data(self, rows):
        self._writer(self._default).upsert_processed_data(rows)

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()
