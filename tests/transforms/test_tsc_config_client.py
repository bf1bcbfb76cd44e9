"""Tests for transforms.tsc_config_client: URLs, validation, the REST client, the enrich stage.

The client is tested against a real HTTP server on loopback (stdlib ThreadingHTTPServer)
whose answers are scripted per request path.
"""

from __future__ import annotations

import collections
import email.utils
import http.server
import json
import socket
import threading
import time
import urllib.parse
from typing import NamedTuple

import apache_beam as beam
import pytest
import tenacity
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from transforms.dead_letters import (
    HEADER_ATTEMPTS,
    HEADER_ERROR_CLASS,
    HEADER_ERROR_MESSAGE,
    HEADER_SOURCE_OFFSET,
    HEADER_STAGE,
)
from transforms.records import Message, SourceRecord
from transforms.tsc_config_client import (
    DEFAULT_PATH,
    EnrichWithTscConfig,
    InvalidTscConfigError,
    TscConfigClient,
    TscConfigError,
    TscConfigHttpError,
    TscConfigNotFoundError,
    TscConfigResponseError,
    TscConfigUnavailableError,
    _retry_after_seconds,
    build_url,
    check_base_url,
    check_path_template,
    get_tsc_configuration,
    validate_config,
)

TOKEN = 's3cr3t-T0ken-value'


# --- A scripted HTTP server on loopback -----------------------------------------------------

class Reply(NamedTuple):
    status: int
    headers: dict[str, str] = {}
    body: bytes = b''
    delay: float = 0.0


def json_reply(document, status: int = 200, **headers) -> Reply:
    return Reply(status, {'Content-Type': 'application/json', **headers},
                 json.dumps(document).encode())


class ScriptedServer:
    """Answers each raw request path from its queue of replies; the last reply repeats.

    Unscripted paths get 404. Every request's raw path and headers are recorded.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._scripts: dict[str, collections.deque[Reply]] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.url = ''

    def script(self, path: str, *replies: Reply) -> None:
        with self._lock:
            self._scripts[path] = collections.deque(replies)

    def next_reply(self, path: str, headers: dict[str, str]) -> Reply:
        with self._lock:
            self.requests.append((path, headers))
            queue = self._scripts.get(path)
            if not queue:
                return Reply(404, {'Content-Type': 'application/json'}, b'{"error":"not found"}')
            return queue.popleft() if len(queue) > 1 else queue[0]

    def paths(self) -> list[str]:
        with self._lock:
            return [path for path, _ in self.requests]

    def count(self, path: str | None = None) -> int:
        return len(self.paths()) if path is None else self.paths().count(path)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'

    def do_GET(self):  # noqa: N802 (the stdlib's name)
        scripted: ScriptedServer = self.server.scripted
        reply = scripted.next_reply(self.path, dict(self.headers.items()))
        if reply.delay:
            time.sleep(reply.delay)
        try:
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header('Content-Length', str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)
        except OSError:
            pass  # the client gave up (timeout test)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    scripted = ScriptedServer()
    httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _Handler)
    httpd.daemon_threads = True
    httpd.scripted = scripted
    scripted.url = f'http://127.0.0.1:{httpd.server_address[1]}'
    thread = threading.Thread(target=httpd.serve_forever, kwargs={'poll_interval': 0.05},
                              daemon=True)
    thread.start()
    try:
        yield scripted
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


@pytest.fixture
def closed_port_url():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    return f'http://127.0.0.1:{port}'


def path_of(customer_id: str, tsc_id: str) -> str:
    return DEFAULT_PATH.format(customerId=urllib.parse.quote(customer_id, safe=''),
                               tscId=urllib.parse.quote(tsc_id, safe=''))


def config(customer_id: str = 'c1', tsc_id: str = 't1', **fields) -> dict:
    return {'customerId': customer_id, 'tscId': tsc_id, 'frequency': 'daily', **fields}


def client_for(url: str, **kwargs) -> TscConfigClient:
    settings = {'attempts': 3, 'backoff_seconds': 0.01, 'timeout_seconds': 5.0}
    settings.update(kwargs)
    return TscConfigClient(url, **settings)


@pytest.fixture
def sleeps(monkeypatch):
    """Records the waits tenacity asks for on this thread (and still waits them)."""
    recorded: list[float] = []
    real_sleep = time.sleep
    main = threading.current_thread()

    def sleep(seconds):
        if threading.current_thread() is main:
            recorded.append(seconds)
        real_sleep(seconds)

    monkeypatch.setattr(tenacity.nap.time, 'sleep', sleep)
    return recorded


# --- build_url and the URL checks ------------------------------------------------------------

HOSTILE_IDS = ['/', '//', '..', '.', '...', '../', '?', '#', '%', '%2F', '%2E%2E', ' ', 'a b',
               'ü', '日本語', 'a/../b', '../../etc/passwd', '?x=1#frag', '\\', ';', '&', '+',
               "' OR 1=1 --", 'c1', '\t\n', '~user', 'a%20b', ':', '@']


@pytest.mark.parametrize('hostile', HOSTILE_IDS)
def test_build_url_keeps_each_id_one_segment(hostile):
    for customer_id, tsc_id in ((hostile, 't1'), ('c1', hostile), (hostile, hostile)):
        url = build_url('http://config.example:8080', DEFAULT_PATH, customer_id, tsc_id)

        parsed = urllib.parse.urlsplit(url)
        assert (parsed.scheme, parsed.netloc) == ('http', 'config.example:8080')
        assert parsed.query == '' and parsed.fragment == ''
        segments = parsed.path.split('/')
        assert len(segments) == len(DEFAULT_PATH.split('/')) == 6
        assert segments[:2] == ['', 'customers']
        assert segments[3] == 'tscs' and segments[5] == 'configuration'
        assert urllib.parse.unquote(segments[2]) == customer_id
        assert urllib.parse.unquote(segments[4]) == tsc_id
        for segment in (segments[2], segments[4]):
            assert segment not in ('.', '..')
            assert not set(segment) & set('/?# \\')


@pytest.mark.parametrize('base, template, expected', [
    ('http://h:1', DEFAULT_PATH, 'http://h:1/customers/c/tscs/t/configuration'),
    ('http://h:1/', DEFAULT_PATH, 'http://h:1/customers/c/tscs/t/configuration'),
    ('https://h/api/v2/', '/tsc/{tscId}/of/{customerId}', 'https://h/api/v2/tsc/t/of/c'),
    ('http://h', '/{customerId}-{tscId}.json', 'http://h/c-t.json'),
])
def test_build_url_templates(base, template, expected):
    assert build_url(base, template, 'c', 't') == expected


@pytest.mark.parametrize('ids, expected_segments', [
    (('.', '..'), ('%2E', '%2E%2E')),
    (('a/../b', '?#'), ('a%2F..%2Fb', '%3F%23')),
    (('%2F', ' '), ('%252F', '%20')),
    (('ü', '...'), ('%C3%BC', '%2E%2E%2E')),
])
def test_build_url_exact_encoding(ids, expected_segments):
    url = build_url('http://h', DEFAULT_PATH, *ids)
    assert url == 'http://h/customers/{}/tscs/{}/configuration'.format(*expected_segments)


@pytest.mark.parametrize('url', ['http://h', 'https://h:8443', 'http://127.0.0.1:1/base/',
                                 'https://config.internal/api'])
def test_check_base_url_accepts(url):
    assert check_base_url(url) == url


@pytest.mark.parametrize('url, fragment', [
    ('', 'http(s) URL with a host'),
    ('config:8080', 'http(s) URL with a host'),
    ('ftp://h', 'http(s) URL with a host'),
    ('file:///etc/passwd', 'http(s) URL with a host'),
    ('http://', 'http(s) URL with a host'),
    ('http:///path', 'http(s) URL with a host'),
    ('http://user:pw@h', 'must not carry credentials'),
    ('http://user@h', 'must not carry credentials'),
    ('https://:token@h', 'must not carry credentials'),
    ('http://h/?q=1', 'query or fragment'),
    ('http://h/#frag', 'query or fragment'),
])
def test_check_base_url_rejects(url, fragment):
    with pytest.raises(ValueError, match=fragment.replace('(', r'\(').replace(')', r'\)')):
        check_base_url(url)


def test_check_base_url_does_not_echo_credentials():
    with pytest.raises(ValueError) as caught:
        check_base_url('http://admin:hunter2@h')
    assert 'hunter2' not in str(caught.value)


@pytest.mark.parametrize('template', [DEFAULT_PATH, '/{tscId}/{customerId}',
                                      '/api/{customerId}/x/{tscId}.json'])
def test_check_path_template_accepts(template):
    assert check_path_template(template) == template


@pytest.mark.parametrize('template, fragment', [
    ('customers/{customerId}/tscs/{tscId}', 'must start with "/"'),
    ('', 'must start with "/"'),
    ('/customers/{customerId}', 'must contain'),
    ('/tscs/{tscId}', 'must contain'),
    ('/static', 'must contain'),
    ('/c/{customerId}/t/{tscId}/{other}', 'may only use'),
    ('/c/{0}/{customerId}/{tscId}', 'may only use'),
    ('/c/{customerId}/t/{tscId}/{', 'may only use'),
    ('/c/{customerId!r}/t/{tscId}', 'must contain'),
])
def test_check_path_template_rejects(template, fragment):
    with pytest.raises(ValueError, match=fragment):
        check_path_template(template)


def test_client_construction_checks_url_and_template():
    with pytest.raises(ValueError, match='credentials'):
        TscConfigClient('http://u:p@h')
    with pytest.raises(ValueError, match='must contain'):
        TscConfigClient('http://h', '/only/{customerId}')


@pytest.mark.parametrize('header, expected', [
    (None, None), ('', None), ('  ', None), ('1', 1.0), (' 120 ', 120.0), ('0', 0.0),
    ('soon', None), ('-1', None), ('1.5', None),
    ('Wed, 21 Oct 2015 07:28:00 GMT', 0.0),  # a date in the past means "now"
])
def test_retry_after_seconds(header, expected):
    assert _retry_after_seconds(header) == expected


def test_retry_after_seconds_future_date():
    header = email.utils.formatdate(time.time() + 3600, usegmt=True)
    assert 3500 < _retry_after_seconds(header) <= 3600


# --- validate_config --------------------------------------------------------------------------

INVALID_CONFIGS = [
    # (config, fragment)
    ([], 'must be a JSON object'),
    ('daily', 'must be a JSON object'),
    (None, 'must be a JSON object'),
    ({'tscId': 't1', 'frequency': 'daily'}, "lacks required field 'customerId'"),
    ({'customerId': 'c1', 'frequency': 'daily'}, "lacks required field 'tscId'"),
    (config(customer_id='c2'), "customerId 'c2' does not match"),
    (config(tsc_id='T1'), "tscId 'T1' does not match"),
    (config(customer_id='c1 '), 'does not match'),
    ({**config(), 'customerId': 1}, 'does not match'),
    ({**config(), 'tscId': None}, 'does not match'),
    ({'customerId': 'c1', 'tscId': 't1'}, "'frequency' must be a non-empty string"),
    (config(frequency=''), "'frequency' must be a non-empty string"),
    (config(frequency='   '), "'frequency' must be a non-empty string"),
    (config(frequency=None), "'frequency' must be a non-empty string"),
    (config(frequency=60), "'frequency' must be a non-empty string"),
    (config(frequency=['daily']), "'frequency' must be a non-empty string"),
    (config(frequency='sometimes'), 'frequency is not usable'),
    (config(frequency='* * * * * *'), 'frequency is not usable'),
    (config(frequency='@reboot'), 'frequency is not usable'),
    (config(frequency='every 7 minutes'), 'frequency is not usable'),
    (config(frequency='TZ=UTC 0 0 * * *'), 'frequency is not usable'),
    (config(timezone='Mars/Olympus_Mons'), 'not a known IANA time zone'),
    (config(timezone='Europe/'), 'not a known IANA time zone'),
    (config(timezone='../../etc/passwd'), 'not a known IANA time zone'),
    (config(timezone='/etc/localtime'), 'not a known IANA time zone'),
    (config(timezone=''), "'timezone' must be a non-empty string"),
    (config(timezone=1), "'timezone' must be a non-empty string"),
    (config(enabled='true'), "'enabled' must be a boolean"),
    (config(enabled=1), "'enabled' must be a boolean"),
    (config(enabled=0), "'enabled' must be a boolean"),
    (config(parameters=[1, 2]), "'parameters' must be a JSON object"),
    (config(parameters='{}'), "'parameters' must be a JSON object"),
    (config(parameters=3), "'parameters' must be a JSON object"),
    (config(namespace='Prod'), 'not a DNS-1123 label'),
    (config(namespace='team_a'), 'not a DNS-1123 label'),
    (config(namespace='-ns'), 'not a DNS-1123 label'),
    (config(namespace='a' * 64), 'not a DNS-1123 label'),
    (config(namespace='a.b'), 'not a DNS-1123 label'),
    (config(namespace='team-a\n'), 'not a DNS-1123 label'),
    (config(namespace=''), "'namespace' must be a non-empty string"),
    (config(namespace=7), "'namespace' must be a non-empty string"),
    (config(image=''), "'image' must be a non-empty string"),
    (config(image='  '), "'image' must be a non-empty string"),
    (config(image=['repo/img']), "'image' must be a non-empty string"),
    (config(impalaCluster=''), "'impalaCluster' must be a non-empty string"),
    (config(impalaCluster=5), "'impalaCluster' must be a non-empty string"),
    # A JSON escape can carry a lone surrogate that no later stage can encode.
    (config(parameters={'key': 'bad \udc80'}), 'not valid Unicode'),
    (config(parameters={'\ud800': 'x'}), 'not valid Unicode'),
    (config(image='repo/\ud800'), 'not valid Unicode'),
]


@pytest.mark.parametrize('raw, fragment', INVALID_CONFIGS)
def test_validate_config_rejects(raw, fragment):
    with pytest.raises(InvalidTscConfigError) as caught:
        validate_config(raw, 'c1', 't1')
    assert fragment in str(caught.value)
    assert caught.value.stage == 'validate'


def test_validate_config_keeps_only_relevant_fields_with_defaults():
    raw = {
        'customerId': 'c1', 'tscId': 't1', 'frequency': 'every 15 minutes',
        'owner': 'someone', 'secret': 'do-not-keep', 'createdAt': '2024-01-01', 'id': 99,
    }

    assert validate_config(raw, 'c1', 't1') == {
        'customerId': 'c1', 'tscId': 't1', 'frequency': 'every 15 minutes', 'enabled': True}
    assert 'enabled' not in raw  # the input is not modified


def test_validate_config_keeps_every_relevant_field():
    raw = {
        'customerId': 'c/1', 'tscId': '..', 'frequency': '0 6 * * MON-FRI', 'enabled': False,
        'timezone': 'Europe/Rome', 'parameters': {'threshold': 0.5, 'tags': ['a']},
        'image': 'registry.example.com/tsc:2', 'namespace': 'team-a',
        'impalaCluster': 'impala-prod', 'extra': True,
    }

    result = validate_config(raw, 'c/1', '..')

    assert result == {k: v for k, v in raw.items() if k != 'extra'}
    assert result['enabled'] is False


@pytest.mark.parametrize('field, value', [
    ('timezone', None), ('parameters', None), ('image', None), ('namespace', None),
    ('parameters', {}), ('timezone', 'UTC'), ('namespace', 'a' * 63), ('enabled', True),
])
def test_validate_config_accepts_optional_values(field, value):
    assert validate_config(config(**{field: value}), 'c1', 't1')[field] == value


# --- The REST client against a real server --------------------------------------------------

def test_fetch_returns_the_object(server):
    body = config(parameters={'x': 1}, extra='kept by fetch')
    server.script(path_of('c1', 't1'), json_reply(body))
    client = client_for(server.url)
    try:
        assert client.fetch('c1', 't1') == body
        assert get_tsc_configuration(client, 'c1', 't1') == {
            'customerId': 'c1', 'tscId': 't1', 'frequency': 'daily', 'parameters': {'x': 1},
            'enabled': True}
    finally:
        client.close()
    assert server.paths() == [path_of('c1', 't1')] * 2
    assert client.requests_sent == 2
    headers = server.requests[0][1]
    assert headers['Accept'] == 'application/json'
    assert 'Authorization' not in headers


def test_fetch_succeeds_after_transient_errors(server, sleeps):
    path = path_of('c1', 't1')
    server.script(path, Reply(503), Reply(503), json_reply(config()))
    client = client_for(server.url, attempts=3, backoff_seconds=0.01)
    try:
        assert client.fetch('c1', 't1') == config()
    finally:
        client.close()
    assert server.count(path) == 3
    assert client.requests_sent == 3
    assert sleeps == [0.01, 0.02]  # exponential backoff from backoff_seconds


def test_fetch_gives_up_after_attempts(server, sleeps):
    path = path_of('c1', 't1')
    server.script(path, Reply(503, body=b'down'))
    client = client_for(server.url, attempts=3, backoff_seconds=0.01)
    try:
        with pytest.raises(TscConfigHttpError) as caught:
            client.fetch('c1', 't1')
    finally:
        client.close()
    assert caught.value.attempts == 3
    assert caught.value.status == 503
    assert caught.value.stage == 'enrich'
    assert 'HTTP 503' in str(caught.value)
    assert server.count(path) == 3
    assert len(sleeps) == 2


def test_fetch_honours_retry_after_capped(server, sleeps):
    path = path_of('c1', 't1')
    server.script(path, Reply(429, {'Retry-After': '1'}), Reply(429, {'Retry-After': '1'}),
                  json_reply(config()))
    client = client_for(server.url, attempts=3, backoff_seconds=0.01,
                        max_retry_after_seconds=0.05)
    try:
        assert client.fetch('c1', 't1') == config()
    finally:
        client.close()
    assert server.count(path) == 3
    # The server asked for 1 s; the cap of 0.05 s is what the client waited.
    assert sleeps == [0.05, 0.05]


def test_fetch_retry_after_below_cap_replaces_backoff(server, sleeps):
    path = path_of('c1', 't1')
    server.script(path, Reply(503, {'Retry-After': '0'}), json_reply(config()))
    client = client_for(server.url, attempts=3, backoff_seconds=0.5)
    try:
        assert client.fetch('c1', 't1') == config()
    finally:
        client.close()
    assert server.count(path) == 2
    assert sleeps == [0.0]


def test_fetch_retry_after_exhausted_reports_it(server):
    path = path_of('c1', 't1')
    server.script(path, Reply(429, {'Retry-After': '1'}))
    client = client_for(server.url, attempts=3, max_retry_after_seconds=0.01)
    try:
        with pytest.raises(TscConfigHttpError) as caught:
            client.fetch('c1', 't1')
    finally:
        client.close()
    assert (caught.value.status, caught.value.retry_after, caught.value.attempts) == (429, 1.0, 3)
    assert server.count(path) == 3


def test_fetch_404_is_not_retried(server):
    client = client_for(server.url, attempts=5)
    try:
        with pytest.raises(TscConfigNotFoundError) as caught:
            client.fetch('c1', 'missing')
    finally:
        client.close()
    assert caught.value.attempts == 1
    assert caught.value.stage == 'enrich'
    assert '404' in str(caught.value)
    assert server.paths() == [path_of('c1', 'missing')]


@pytest.mark.parametrize('status', [400, 401, 403, 405, 409, 410, 422])
def test_fetch_other_4xx_is_not_retried(server, status):
    path = path_of('c1', 't1')
    server.script(path, Reply(status, {'Retry-After': '0'}, b'{"error": "no"}'))
    client = client_for(server.url, attempts=4)
    try:
        with pytest.raises(TscConfigHttpError) as caught:
            client.fetch('c1', 't1')
    finally:
        client.close()
    assert not isinstance(caught.value, TscConfigNotFoundError)
    assert (caught.value.status, caught.value.attempts) == (status, 1)
    assert caught.value.retry_after is None
    assert server.count(path) == 1


@pytest.mark.parametrize('status', [408, 429, 500, 502, 503, 504, 599])
def test_fetch_retryable_statuses_are_retried(server, status):
    path = path_of('c1', 't1')
    server.script(path, Reply(status), json_reply(config()))
    client = client_for(server.url, attempts=2)
    try:
        assert client.fetch('c1', 't1') == config()
    finally:
        client.close()
    assert server.count(path) == 2


@pytest.mark.parametrize('reply, fragment', [
    (Reply(200, {'Content-Type': 'text/html'}, b'<html>oops</html>'), 'is not JSON'),
    (Reply(200, {'Content-Type': 'application/json'}, b''), 'is not JSON'),
    (Reply(200, {'Content-Type': 'application/json'}, b'{"truncated": '), 'is not JSON'),
    (json_reply([config()]), 'is a JSON list, not an object'),
    (json_reply('config'), 'is a JSON str, not an object'),
    (json_reply(None), 'is a JSON NoneType, not an object'),
    (json_reply(42), 'not an object'),
])
def test_fetch_bad_body_is_not_retried(server, reply, fragment):
    path = path_of('c1', 't1')
    server.script(path, reply)
    client = client_for(server.url, attempts=3)
    try:
        with pytest.raises(TscConfigResponseError) as caught:
            client.fetch('c1', 't1')
    finally:
        client.close()
    assert fragment in str(caught.value)
    assert caught.value.attempts == 1
    assert server.count(path) == 1


def test_fetch_connection_refused(closed_port_url, sleeps):
    client = client_for(closed_port_url, attempts=3, backoff_seconds=0.01)
    try:
        with pytest.raises(TscConfigUnavailableError) as caught:
            client.fetch('c1', 't1')
    finally:
        client.close()
    assert caught.value.attempts == 3
    assert client.requests_sent == 3
    assert 'unreachable' in str(caught.value)
    assert len(sleeps) == 2


def test_fetch_timeout(server):
    path = path_of('c1', 'slow')
    server.script(path, Reply(200, {'Content-Type': 'application/json'},
                              json.dumps(config(tsc_id='slow')).encode(), delay=0.8))
    client = client_for(server.url, attempts=2, backoff_seconds=0.01, timeout_seconds=0.2)
    try:
        with pytest.raises(TscConfigUnavailableError) as caught:
            client.fetch('c1', 'slow')
    finally:
        client.close()
    assert caught.value.attempts == 2
    assert 'timed out' in str(caught.value)
    assert server.count(path) == 2


@pytest.mark.parametrize('customer_id, tsc_id, raw_path', [
    ('..', '.', '/customers/%2E%2E/tscs/%2E/configuration'),
    ('a/../b', '../..', '/customers/a%2F..%2Fb/tscs/..%2F../configuration'),
    ('?x=1', '#frag', '/customers/%3Fx%3D1/tscs/%23frag/configuration'),
    ('%2F', '%2E%2E', '/customers/%252F/tscs/%252E%252E/configuration'),
    ('a b', 'ü', '/customers/a%20b/tscs/%C3%BC/configuration'),
    ("c'; DROP TABLE x;--", '1 OR 1=1',
     '/customers/c%27%3B%20DROP%20TABLE%20x%3B--/tscs/1%20OR%201%3D1/configuration'),
])
def test_hostile_ids_reach_the_server_as_one_segment(server, customer_id, tsc_id, raw_path):
    server.script(raw_path, json_reply(config(customer_id, tsc_id)))
    client = client_for(server.url)
    try:
        assert get_tsc_configuration(client, customer_id, tsc_id)['tscId'] == tsc_id
    finally:
        client.close()
    assert server.paths() == [raw_path]
    segments = raw_path.split('/')
    assert [urllib.parse.unquote(segments[2]), urllib.parse.unquote(segments[4])] == [
        customer_id, tsc_id]


def test_bearer_token_is_sent_and_never_in_errors(server, closed_port_url):
    server.script(path_of('c1', 'ok'), json_reply(config(tsc_id='ok')))
    server.script(path_of('c1', 'down'), Reply(503))
    server.script(path_of('c1', 'bad'), Reply(400, body=TOKEN.encode()))
    server.script(path_of('c1', 'html'), Reply(200, body=b'<' + TOKEN.encode()))
    client = client_for(server.url, attempts=2, token=TOKEN)
    errors: list[TscConfigError] = []
    try:
        assert client.fetch('c1', 'ok')['tscId'] == 'ok'
        for tsc_id in ('down', 'bad', 'html', 'missing'):
            with pytest.raises(TscConfigError) as caught:
                client.fetch('c1', tsc_id)
            errors.append(caught.value)
    finally:
        client.close()
    unreachable = client_for(closed_port_url, attempts=1, token=TOKEN)
    try:
        with pytest.raises(TscConfigUnavailableError) as caught:
            unreachable.fetch('c1', 't1')
        errors.append(caught.value)
    finally:
        unreachable.close()

    assert server.count() == 6
    assert {headers.get('Authorization') for _, headers in server.requests} == {
        f'Bearer {TOKEN}'}
    assert [type(e) for e in errors] == [TscConfigHttpError, TscConfigHttpError,
                                         TscConfigResponseError, TscConfigNotFoundError,
                                         TscConfigUnavailableError]
    for error in errors:
        assert TOKEN not in str(error)
        assert TOKEN not in repr(error)
        assert TOKEN not in repr(error.args)


# --- EnrichWithTscConfig in a pipeline -------------------------------------------------------

def message(offset: int, operation: str, customer_id: str, tsc_id: str) -> Message:
    text = json.dumps({'operation': operation, 'customerId': customer_id, 'tscId': tsc_id})
    source = SourceRecord(value=text.encode(), key=f'key-{offset}'.encode(), topic='orders',
                          partition=0, offset=offset)
    return Message(source=source, operation=operation, customer_id=customer_id, tsc_id=tsc_id,
                   payload=json.loads(text), text=text)


def _check_enrich_dead_letters(expected):
    """expected: offset -> (stage, error class, attempts or None, message fragment)."""

    def check(actual):
        got = {int(x.header(HEADER_SOURCE_OFFSET)): x for x in actual}
        assert len(got) == len(actual), actual
        assert sorted(got) == sorted(expected)
        for offset, (stage, error_class, attempts, fragment) in expected.items():
            letter = got[offset]
            assert letter.key == f'key-{offset}'.encode()
            assert json.loads(letter.value)['tscId'] is not None
            assert letter.header(HEADER_STAGE) == stage.encode()
            assert letter.header(HEADER_ERROR_CLASS) == error_class.encode()
            assert fragment in letter.header(HEADER_ERROR_MESSAGE).decode()
            if attempts is not None:
                assert letter.header(HEADER_ATTEMPTS) == str(attempts).encode()
            for _, value in letter.headers:
                assert TOKEN.encode() not in value

    return check


def test_enrich_with_tsc_config_pipeline(server, tmp_path):
    # The token file is read on the worker: the token itself never enters the job graph.
    token_file = tmp_path / 'token'
    token_file.write_text(TOKEN + '\n', encoding='utf-8')
    good = config('c1', 't1', timezone='Europe/Rome', parameters={'p': 1}, owner='dropped')
    server.script(path_of('c1', 't1'), json_reply(good))
    server.script(path_of('c2', 't2'), json_reply(config('c2', 't2', frequency='every 2 hours')))
    server.script(path_of('c3', 'bad'), json_reply(config('c3', 'bad', frequency='sometimes')))
    server.script(path_of('c4', 'down'), Reply(503))
    server.script(path_of('c6', 'x'), json_reply(config('c6', 'x')))
    # path_of('c3', 'missing') is unscripted: 404.
    batch = [
        message(0, 'create', 'c1', 't1'),
        message(1, 'create', 'c3', 'missing'),
        message(2, 'update', 'c1', 't1'),  # same key: the same single GET serves it
        message(3, 'create', 'c3', 'bad'),
        message(4, 'delete', 'c5', 'gone'),  # needs no configuration: no request
        message(5, 'update', 'c4', 'down'),
        message(6, 'create', 'c2', 't2'),
    ]
    # A broken message (not possible after parse) makes its batch fail unexpectedly:
    # every message of that batch becomes a dead letter instead of crashing the job.
    broken = message(8, 'create', 'c6', 'x')
    broken.tsc_id = None
    broken_batch = [message(7, 'delete', 'c6', 'x'), broken]

    pipeline = TestPipeline(runner='FnApiRunner')
    result = (pipeline
              | beam.Create([batch, [], broken_batch])
              | EnrichWithTscConfig(server.url, attempts=2, backoff_seconds=0.01,
                                    timeout_seconds=5, concurrency=4, token_file=str(token_file)))
    expected_config = {'customerId': 'c1', 'tscId': 't1', 'frequency': 'daily',
                       'timezone': 'Europe/Rome', 'parameters': {'p': 1}, 'enabled': True}
    assert_that(
        result['batches'] | 'Summarize' >> beam.Map(lambda b: [
            (m.source.offset, m.operation, m.config, m.cron_schedule) for m in b]),
        equal_to([[
            (0, 'create', expected_config, '0 0 * * *'),
            (2, 'update', expected_config, '0 0 * * *'),
            (4, 'delete', None, None),
            (6, 'create', {'customerId': 'c2', 'tscId': 't2', 'frequency': 'every 2 hours',
                           'enabled': True}, '0 */2 * * *'),
        ]]),
        label='batches')
    assert_that(result[EnrichWithTscConfig.DEAD_LETTERS], _check_enrich_dead_letters({
        1: ('enrich', 'TscConfigNotFoundError', 1, 'HTTP 404'),
        3: ('validate', 'InvalidTscConfigError', None, 'frequency is not usable'),
        5: ('enrich', 'TscConfigHttpError', 2, 'HTTP 503'),
    }), label='dead_letters')
    # The unexpected failure's whole batch, on the safety net's own output.
    assert_that(result['failed'], _check_enrich_dead_letters({
        7: ('enrich', 'TypeError', None, 'unexpected error'),
        8: ('enrich', 'TypeError', None, 'unexpected error'),
    }), label='failed')

    outcome = pipeline.run()
    outcome.wait_until_finish()

    assert server.count(path_of('c1', 't1')) == 1
    assert server.count(path_of('c3', 'missing')) == 1
    assert server.count(path_of('c3', 'bad')) == 1
    assert server.count(path_of('c4', 'down')) == 2
    assert server.count(path_of('c2', 't2')) == 1
    assert not any('c5' in path or 'c6' in path for path in server.paths())
    assert server.count() == 6
    assert {headers.get('Authorization') for _, headers in server.requests} == {
        f'Bearer {TOKEN}'}
    counters = {c.key.metric.name: c.committed
                for c in outcome.metrics().query(MetricsFilter())['counters']}
    assert counters['rest_requests'] == 6
    assert counters['enriched'] == 4
    assert counters['dead_letters_enrich'] == 2
    assert counters['dead_letters_validate'] == 1


@pytest.mark.parametrize('kwargs, fragment', [
    ({'attempts': 0}, 'attempts'),
    ({'backoff_seconds': -1}, 'backoff'),
    ({'timeout_seconds': 0}, 'timeout'),
    ({'concurrency': 0}, 'concurrency'),
    ({'path_template': '/x/{customerId}'}, 'must contain'),
])
def test_enrich_construction_errors(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        EnrichWithTscConfig('http://h', **kwargs)


def test_enrich_construction_rejects_bad_url():
    with pytest.raises(ValueError, match='credentials'):
        EnrichWithTscConfig('http://user:pass@h')
