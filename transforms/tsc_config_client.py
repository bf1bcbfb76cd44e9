"""Enrich stage: fetch each TSC configuration over REST, keep the relevant fields, validate them."""

from __future__ import annotations

import concurrent.futures
import email.utils
import json
import logging
import os
import re
import time
import urllib.parse
import zoneinfo
from collections.abc import Collection, Iterable
from typing import Any

import apache_beam as beam
import requests
import tenacity
from apache_beam.metrics import Metrics

from transforms.cronjob_builder import CronFormatError, frequency_to_cron
from transforms.dead_letters import StageError, dead_letter, with_safety_net
from transforms.records import Message

_LOGGER = logging.getLogger(__name__)

DEFAULT_PATH = '/customers/{customerId}/tscs/{tscId}/configuration'
RELEVANT_FIELDS = ('customerId', 'tscId', 'frequency', 'enabled', 'timezone', 'parameters',
                   'image', 'namespace', 'impalaCluster')
RETRYABLE_STATUS = frozenset({408, 429}) | frozenset(range(500, 600))
_DNS_LABEL = re.compile(r'^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$')


class TscConfigError(StageError):
    """The configuration could not be fetched."""

    stage = 'enrich'


class TscConfigNotFoundError(TscConfigError):
    """The service answered 404: there is no configuration for this TSC."""


class TscConfigHttpError(TscConfigError):
    """The service answered with an error status."""

    def __init__(self, message: str, *, status: int, retry_after: float | None = None,
                 attempts: int | None = None):
        super().__init__(message, attempts=attempts)
        self.status = status
        self.retry_after = retry_after


class TscConfigUnavailableError(TscConfigError):
    """The service could not be reached (connection error or timeout)."""


class TscConfigResponseError(TscConfigError):
    """The service answered 2xx with a body that is not a JSON object."""


class InvalidTscConfigError(StageError):
    """The configuration was fetched but breaks a rule of ``validate_config``."""

    stage = 'validate'


def build_url(base_url: str, path_template: str, customer_id: str, tsc_id: str) -> str:
    """Builds the configuration URL, each id percent-encoded as exactly one path segment.

    ``/``, ``?``, ``#`` and ``%`` are always encoded, and a segment made only of
    dots is encoded too, so no id can change the path the template gives.
    """
    return base_url.rstrip('/') + path_template.format(
        customerId=_path_segment(customer_id), tscId=_path_segment(tsc_id))


def _path_segment(value: str) -> str:
    segment = urllib.parse.quote(value, safe='')
    if segment.strip('.') == '':
        segment = segment.replace('.', '%2E')
    return segment


def check_base_url(base_url: str) -> str:
    """Validates ``--tsc_config_url``; raises ValueError saying what to fix."""
    parsed = urllib.parse.urlsplit(base_url)
    if parsed.scheme not in ('http', 'https') or not parsed.hostname:
        raise ValueError(f'--tsc_config_url must be an http(s) URL with a host, got {base_url!r}')
    if parsed.username or parsed.password:
        raise ValueError('--tsc_config_url must not carry credentials; '
                         'put a bearer token in TSC_CONFIG_TOKEN or --tsc_config_token_file')
    if parsed.query or parsed.fragment:
        raise ValueError(f'--tsc_config_url must not have a query or fragment, got {base_url!r}')
    return base_url


def check_path_template(path_template: str) -> str:
    """Validates ``--tsc_config_path``; raises ValueError saying what to fix."""
    if not path_template.startswith('/'):
        raise ValueError(f'--tsc_config_path must start with "/", got {path_template!r}')
    try:
        path_template.format(customerId='c', tscId='t')
    except (KeyError, IndexError, ValueError) as e:
        raise ValueError(f'--tsc_config_path may only use {{customerId}} and {{tscId}}, '
                         f'got {path_template!r}') from e
    if '{customerId}' not in path_template or '{tscId}' not in path_template:
        raise ValueError(f'--tsc_config_path must contain {{customerId}} and {{tscId}}, '
                         f'got {path_template!r}')
    return path_template


def validate_config(config: Any, customer_id: str, tsc_id: str) -> dict[str, Any]:
    """Checks a fetched configuration and returns its relevant fields with defaults.

    Raises:
        InvalidTscConfigError: a required field is missing, a field has the wrong type,
            the ids differ from the message's, the frequency does not convert to a
            cron schedule, or the time zone does not exist.
    """
    if not isinstance(config, dict):
        raise InvalidTscConfigError(
            f'configuration must be a JSON object, got {type(config).__name__}')
    filtered = {name: config[name] for name in RELEVANT_FIELDS if name in config}
    try:
        json.dumps(filtered, ensure_ascii=False).encode('utf-8')
    except UnicodeEncodeError as e:
        # A JSON escape like "\ud800" decodes to a lone surrogate, which SQL and YAML refuse.
        raise InvalidTscConfigError('configuration is not valid Unicode: it has a lone '
                                    'surrogate') from e
    for name, expected in (('customerId', customer_id), ('tscId', tsc_id)):
        if name not in filtered:
            raise InvalidTscConfigError(f'configuration lacks required field {name!r}')
        if filtered[name] != expected:
            raise InvalidTscConfigError(
                f'configuration {name} {filtered[name]!r} does not match '
                f'the message\'s {expected!r}')
    frequency = filtered.get('frequency')
    if not isinstance(frequency, str) or not frequency.strip():
        raise InvalidTscConfigError('configuration field \'frequency\' must be a non-empty string')
    try:
        frequency_to_cron(frequency)
    except CronFormatError as e:
        raise InvalidTscConfigError(f'configuration frequency is not usable: {e}') from e
    filtered.setdefault('enabled', True)
    if not isinstance(filtered['enabled'], bool):
        raise InvalidTscConfigError('configuration field \'enabled\' must be a boolean')
    _check_optional(filtered, 'parameters', dict, 'a JSON object')
    for name in ('timezone', 'image', 'namespace', 'impalaCluster'):
        _check_optional(filtered, name, str, 'a non-empty string')
        if filtered.get(name) is not None and not filtered[name].strip():
            raise InvalidTscConfigError(f'configuration field {name!r} must be a non-empty string')
    timezone = filtered.get('timezone')
    if timezone is not None:
        try:
            zoneinfo.ZoneInfo(timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as e:
            raise InvalidTscConfigError(f'configuration timezone {timezone!r} is not a known '
                                        'IANA time zone') from e
    namespace = filtered.get('namespace')
    if namespace is not None and not _DNS_LABEL.fullmatch(namespace):
        raise InvalidTscConfigError(
            f'configuration namespace {namespace!r} is not a DNS-1123 label')
    return filtered


def _check_optional(config: dict[str, Any], name: str, kind: type, what: str) -> None:
    value = config.get(name)
    if value is not None and not isinstance(value, kind):
        raise InvalidTscConfigError(f'configuration field {name!r} must be {what}')


def _retry_after_seconds(header: str | None) -> float | None:
    if not header:
        return None
    header = header.strip()
    if header.isdigit():
        return float(header)
    try:
        moment = email.utils.parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())


class TscConfigClient:
    """Fetches TSC configurations with one pooled session and bounded retries.

    Not picklable by design: create it in ``DoFn.setup()`` and close it in ``teardown()``.

    Args:
        base_url: Scheme, host and port of the configuration service.
        path_template: Path with ``{customerId}`` and ``{tscId}``.
        attempts: At most this many attempts in all.
        backoff_seconds: First wait between attempts; doubles after each attempt.
        timeout_seconds: Connect and read timeout of one attempt.
        max_retry_after_seconds: Upper bound on a server's ``Retry-After``.
        token: Bearer token sent in ``Authorization``; never logged.
        pool_size: Connections kept alive (the caller's concurrency).
    """

    def __init__(self, base_url: str, path_template: str = DEFAULT_PATH, *, attempts: int = 3,
                 backoff_seconds: float = 1.0, timeout_seconds: float = 10.0,
                 max_retry_after_seconds: float = 30.0, token: str | None = None,
                 pool_size: int = 8):
        self._base_url = check_base_url(base_url)
        self._path_template = check_path_template(path_template)
        self._attempts = attempts
        self._backoff_seconds = backoff_seconds
        self._timeout = timeout_seconds
        self._max_retry_after = max_retry_after_seconds
        self.requests_sent = 0
        self._session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=pool_size)
        self._session.mount('http://', adapter)
        self._session.mount('https://', adapter)
        self._session.headers['Accept'] = 'application/json'
        if token:
            self._session.headers['Authorization'] = f'Bearer {token}'

    def close(self) -> None:
        self._session.close()

    def _wait(self, retry_state: tenacity.RetryCallState) -> float:
        error = retry_state.outcome.exception() if retry_state.outcome else None
        retry_after = getattr(error, 'retry_after', None)
        if retry_after is not None:
            return min(retry_after, self._max_retry_after)
        return self._backoff_seconds * 2 ** (retry_state.attempt_number - 1)

    def fetch(self, customer_id: str, tsc_id: str) -> dict[str, Any]:
        """GETs the raw configuration object; raises a ``TscConfigError`` on failure."""
        url = build_url(self._base_url, self._path_template, customer_id, tsc_id)
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self._attempts),
            wait=self._wait,
            retry=tenacity.retry_if_exception(_is_transient),
            reraise=True,
        )
        try:
            body = retrying(self._get_once, url)
        except TscConfigError as e:
            e.attempts = retrying.statistics.get('attempt_number', 1)
            raise
        return body

    def _get_once(self, url: str) -> dict[str, Any]:
        self.requests_sent += 1
        # requests re-quotes URLs and decodes %2E back to '.', which turns an id of '.' or
        # '..' into a dot segment that servers resolve; send the URL as build_url encoded it.
        try:
            request = self._session.prepare_request(requests.Request('GET', url))
            request.url = url
            settings = self._session.merge_environment_settings(url, {}, None, None, None)
            response = self._session.send(request, timeout=self._timeout, **settings)
        except requests.Timeout as e:
            raise TscConfigUnavailableError(
                f'configuration service timed out after {self._timeout}s') from e
        except requests.RequestException as e:
            raise TscConfigUnavailableError(
                f'configuration service unreachable: {type(e).__name__}') from e
        path = urllib.parse.urlsplit(url).path
        if response.status_code == 404:
            raise TscConfigNotFoundError(f'no configuration at {path} (HTTP 404)')
        if response.status_code >= 400 or response.status_code < 200:
            raise TscConfigHttpError(
                f'configuration service answered HTTP {response.status_code} for {path}',
                status=response.status_code,
                retry_after=_retry_after_seconds(response.headers.get('Retry-After'))
                if response.status_code in RETRYABLE_STATUS else None)
        try:
            body = response.json()
        except ValueError as e:
            raise TscConfigResponseError(f'configuration at {path} is not JSON') from e
        if not isinstance(body, dict):
            raise TscConfigResponseError(
                f'configuration at {path} is a JSON {type(body).__name__}, not an object')
        return body


def read_token(path: str | None) -> str | None:
    """The bearer token: the file's content, else ``TSC_CONFIG_TOKEN``, else None."""
    if path:
        try:
            with open(path, encoding='utf-8') as handle:
                return handle.read().strip() or None
        except OSError as e:
            raise ValueError(f'cannot read --tsc_config_token_file: {e.strerror}') from e
    return os.environ.get('TSC_CONFIG_TOKEN') or None


def _is_transient(error: BaseException) -> bool:
    if isinstance(error, TscConfigUnavailableError):
        return True
    return isinstance(error, TscConfigHttpError) and error.status in RETRYABLE_STATUS


def get_tsc_configuration(client: TscConfigClient, customer_id: str, tsc_id: str) -> dict[str, Any]:
    """Fetches, filters and validates the configuration of one TSC.

    Raises:
        TscConfigError: fetching failed (stage ``enrich``).
        InvalidTscConfigError: the configuration breaks a rule (stage ``validate``).
    """
    return validate_config(client.fetch(customer_id, tsc_id), customer_id, tsc_id)


class _EnrichBatchFn(beam.DoFn):
    """Fetches the configurations a batch needs, one GET per distinct key, concurrently."""

    def __init__(self, settings: dict[str, Any], config_operations: Collection[str],
                 concurrency: int):
        self._settings = settings
        self._config_operations = frozenset(config_operations)
        self._concurrency = concurrency
        self._client: TscConfigClient | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._enriched = Metrics.counter('orchestrator', 'enriched')
        self._requests = Metrics.counter('orchestrator', 'rest_requests')
        self._dead = {stage: Metrics.counter('orchestrator', f'dead_letters_{stage}')
                      for stage in ('enrich', 'validate')}

    def setup(self):
        settings = dict(self._settings)
        # The token is read here, on the worker, so it never travels in the job graph.
        settings['token'] = read_token(settings.pop('token_file'))
        self._client = TscConfigClient(pool_size=self._concurrency, **settings)
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=self._concurrency, thread_name_prefix='tsc-config')

    def teardown(self):
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        if self._client is not None:
            self._client.close()

    def process(self, batch: list[Message]) -> Iterable[Any]:
        keys = {m.tsc_key for m in batch if m.operation in self._config_operations}
        sent_before = self._client.requests_sent
        futures = {key: self._executor.submit(get_tsc_configuration, self._client, *key)
                   for key in keys}
        outcomes = {}
        for key, future in futures.items():
            try:
                config = future.result()
                outcomes[key] = (config, frequency_to_cron(config['frequency']), None)
            except (TscConfigError, InvalidTscConfigError) as e:
                outcomes[key] = (None, None, e)
        self._requests.inc(self._client.requests_sent - sent_before)
        enriched = []
        for message in batch:
            if message.operation not in self._config_operations:
                enriched.append(message)
                continue
            config, cron_schedule, error = outcomes[message.tsc_key]
            if error is not None:
                self._dead[error.stage].inc()
                _LOGGER.info('dead letter at %s for %s:%s@%s: %s', error.stage,
                             message.source.topic, message.source.partition,
                             message.source.offset, error)
                yield beam.pvalue.TaggedOutput(
                    EnrichWithTscConfig.DEAD_LETTERS,
                    dead_letter(message.source, error.stage, error, attempts=error.attempts))
                continue
            message.config = config
            message.cron_schedule = cron_schedule
            enriched.append(message)
        self._enriched.inc(len(enriched))
        if enriched:
            yield enriched


class EnrichWithTscConfig(beam.PTransform):
    """Adds the validated TSC configuration to each message of each batch.

    Takes a PCollection of batches (lists of ``Message``) and returns batches of
    enriched messages (``config`` and ``cron_schedule`` set) and ``dead_letters`` at
    stage ``enrich`` (fetch failed) or ``validate`` (bad configuration). Messages
    whose operation needs no configuration pass through unchanged.

    Args:
        base_url: The configuration service, e.g. ``http://config:8080``.
        path_template: URL path with ``{customerId}`` and ``{tscId}``.
        config_operations: Operations that need a configuration.
        attempts: At most this many attempts per GET (tenacity).
        backoff_seconds: First backoff; exponential after.
        timeout_seconds: Timeout of one attempt.
        concurrency: Concurrent GETs per worker.
        token_file: File with a bearer token, read on each worker at setup; without it
            the worker's ``TSC_CONFIG_TOKEN`` environment variable, if any.
    """

    DEAD_LETTERS = 'dead_letters'

    def __init__(self, base_url: str, *, path_template: str = DEFAULT_PATH,
                 config_operations: Collection[str] = ('create', 'update'), attempts: int = 3,
                 backoff_seconds: float = 1.0, timeout_seconds: float = 10.0,
                 max_retry_after_seconds: float = 30.0, concurrency: int = 16,
                 token_file: str | None = None):
        super().__init__()
        if attempts < 1:
            raise ValueError(f'--tsc_config_attempts must be at least 1, got {attempts}')
        if backoff_seconds < 0 or timeout_seconds <= 0:
            raise ValueError('--tsc_config_backoff_seconds must be >= 0 and '
                             '--tsc_config_timeout_seconds > 0')
        if concurrency < 1:
            raise ValueError(f'--tsc_config_concurrency must be at least 1, got {concurrency}')
        self._settings = dict(
            base_url=check_base_url(base_url), path_template=check_path_template(path_template),
            attempts=attempts, backoff_seconds=backoff_seconds, timeout_seconds=timeout_seconds,
            max_retry_after_seconds=max_retry_after_seconds, token_file=token_file)
        self._config_operations = tuple(config_operations)
        self._concurrency = concurrency

    def expand(self, batches):
        return with_safety_net(batches, 'FetchTscConfigs', 'enrich', 'batches', _EnrichBatchFn(
            self._settings, self._config_operations, self._concurrency))
