"""Pure tests of transforms.impala_writer: literals, URLs, statement bounds, the clusters file."""

from __future__ import annotations

import textwrap

import pytest

from testing.hs2_server import lex
from transforms.impala_writer import (
    ImpalaCluster,
    ImpalaSettings,
    ImpalaWriter,
    chunk_rows,
    impala_literal,
    load_impala_clusters,
    parse_impala_url,
)
from transforms.warehouse import RejectedRowsError

# ---------------------------------------------------------------------------- impala_literal

LITERALS = [
    (None, 'NULL'),
    (True, 'TRUE'),
    (False, 'FALSE'),
    (0, '0'),
    (42, '42'),
    (-7, '-7'),
    (2 ** 63 - 1, '9223372036854775807'),
    ('', "''"),
    ('plain', "'plain'"),
    ("it's", "'it\\'s'"),
    ('say "hi"', "'say \\\"hi\\\"'"),
    ('back\\slash', "'back\\\\slash'"),
    ('\\', "'\\\\'"),
    ("\\'", "'\\\\\\''"),
    ('a\nb', "'a\\nb'"),
    ('a\rb', "'a\\rb'"),
    ('a\tb', "'a\\tb'"),
    ('a\0b', "'a\\0b'"),
    ('a\x1ab', "'a\\Zb'"),
    ('a\bb', "'a\\bb'"),
    ('100%', "'100%'"),
    ('%s %(x)s %%', "'%s %(x)s %%'"),
    ('?', "'?'"),
    (':name :1 :00', "':name :1 :00'"),
    ('😀 \U0001f600', "'😀 \U0001f600'"),
    ('ünïcödé 中文', "'ünïcödé 中文'"),
]

HOSTILE = [
    '', "'", '"', '\\', "\\'", "''", '\\\\\'\\', '%', '%s %d %(x)s %%', '?', '??', ':name',
    ':1 :00 12:30', '\n', '\r\n', '\t', '\0', 'a\0b\x01\x1a\x7f\b', '😀 emoji \U0001f600 non-BMP',
    'ünïcödé 中文', 'x' * 200_000,
    "it's a \"mix\" of \\n not-newline, '' and \\' and 100% ? :x",
    "x'; DROP TABLE tsc_configurations; --",
]


@pytest.mark.parametrize('value, expected', LITERALS, ids=[repr(v)[:30] for v, _ in LITERALS])
def test_impala_literal(value, expected):
    assert impala_literal(value) == expected


def test_impala_literal_long_string():
    value = 'ab' * 100_000
    assert impala_literal(value) == "'" + value + "'"


@pytest.mark.parametrize('value', HOSTILE, ids=range(len(HOSTILE)))
def test_impala_literal_is_one_string_token_that_decodes_back(value):
    # The HS2 test server lexes with Impala's escape rules: one literal, the same text.
    tokens = [t for t in lex('SELECT ' + impala_literal(value)) if t.kind not in ('ws',)]
    assert [t.kind for t in tokens] == ['word', 'str']
    assert tokens[1].value == value


@pytest.mark.parametrize('value', HOSTILE[:-2], ids=range(len(HOSTILE) - 2))
def test_impala_literal_has_no_raw_control_characters(value):
    rendered = impala_literal(value)
    assert not any(ch in rendered for ch in '\n\r\0\x1a\b')


@pytest.mark.parametrize('value', [b'bytes', bytearray(b'x'), 1.5, float('nan'), object(),
                                   ['list'], {'a': 1}])
def test_impala_literal_rejects_other_types(value):
    with pytest.raises(TypeError, match='no Impala literal'):
        impala_literal(value)


# ---------------------------------------------------------------------------- parse_impala_url

def test_parse_impala_url_defaults():
    settings = parse_impala_url('impala://impala-a')
    assert settings == ImpalaSettings(host='impala-a', port=21050, database='default')
    assert settings.auth == 'NOSASL' and settings.user is None
    assert settings.ssl is False and settings.ca_cert is None
    assert settings.http is False and settings.http_path == '' and settings.timeout is None


@pytest.mark.parametrize('url, expected', [
    ('impala://h:21051/tsc', dict(host='h', port=21051, database='tsc')),
    ('impala://h:21050/', dict(database='default')),
    ('impala://etl@h:21050/tsc', dict(user='etl')),
    ('impala://etl%40corp@h/tsc', dict(user='etl@corp')),
    ('impala://h/tsc?auth=plain', dict(auth='PLAIN')),
    ('impala://h/tsc?auth=LDAP', dict(auth='LDAP')),
    ('impala://h/tsc?auth=GSSAPI', dict(auth='GSSAPI')),
    ('impala://h/tsc?auth=JWT&http=true', dict(auth='JWT', http=True)),
    ('impala://h/tsc?auth=NOSASL', dict(auth='NOSASL')),
    ('impala://h/tsc?ssl=true', dict(ssl=True, ca_cert=None)),
    ('impala://h/tsc?ssl=1&ca_cert=/etc/ssl/ca.pem', dict(ssl=True, ca_cert='/etc/ssl/ca.pem')),
    ('impala://h/tsc?ssl=false', dict(ssl=False)),
    ('impala://h/tsc?http=yes&http_path=cliservice', dict(http=True, http_path='cliservice')),
    ('impala://h/tsc?timeout=2.5', dict(timeout=2.5)),
    ('impala://h/tsc?timeout=', dict(timeout=None)),
    ('impala://[::1]:21050/tsc', dict(host='::1', port=21050)),
])
def test_parse_impala_url(url, expected):
    settings = parse_impala_url(url)
    for name, value in expected.items():
        assert getattr(settings, name) == value, name


@pytest.mark.parametrize('url, fragment', [
    ('sqlite:///x.db', 'impala://'),
    ('impala:///tsc', 'impala://'),
    ('impala://h/tsc?auth=KERBEROS', 'auth must be one of'),
    ('impala://h/tsc?auth=', 'auth must be one of'),
    ('impala://h/tsc?password=x', 'unknown impala URL parameters'),
    ('impala://h/tsc?user=etl', 'unknown impala URL parameters'),
    ('impala://h/tsc?timeout=soon', 'bad port or timeout'),
    ('impala://h/tsc?timeout=0', 'timeout must be a positive'),
    ('impala://h/tsc?timeout=-1', 'timeout must be a positive'),
    ('impala://h/tsc?timeout=nan', 'timeout must be a positive'),
    ('impala://h/tsc?timeout=inf', 'timeout must be a positive'),
    ('impala://h:port/tsc', 'bad port or timeout'),
    ('impala://h:99999/tsc', 'bad port or timeout'),
    ('impala://h/tsc;drop', 'not a valid table or database name'),
    ('impala://h/1db', 'not a valid table or database name'),
    ('impala://h/a.b', 'not a valid table or database name'),
    ("impala://h/x'y", 'not a valid table or database name'),
    ('impala://h/db/extra', 'not a valid table or database name'),
])
def test_parse_impala_url_rejects(url, fragment):
    with pytest.raises(ValueError, match=fragment):
        parse_impala_url(url)


@pytest.mark.parametrize('url', [
    'impala://etl:S3cr3tPw@h:21050/tsc',
    'impala://etl:S3cr3tPw@h/tsc?auth=LDAP',
    'impala://:S3cr3tPw@h/tsc',
])
def test_parse_impala_url_refuses_password_without_echoing_it(url):
    with pytest.raises(ValueError) as caught:
        parse_impala_url(url)
    assert 'IMPALA_PASSWORD' in str(caught.value)
    assert 'S3cr3tPw' not in str(caught.value)
    assert 'S3cr3tPw' not in repr(caught.value)


def test_parse_impala_url_unknown_parameter_names_only_the_key():
    with pytest.raises(ValueError) as caught:
        parse_impala_url('impala://h/tsc?token=S3cr3tTok')
    assert "'token'" in str(caught.value) and 'S3cr3tTok' not in str(caught.value)


def test_redacted():
    assert parse_impala_url('impala://h:1/db').redacted() == 'impala://h:1/db?auth=NOSASL'
    assert (parse_impala_url('impala://etl@h:21050/tsc?auth=ldap&ssl=true&ca_cert=/ca.pem')
            .redacted() == 'impala://etl@h:21050/tsc?auth=LDAP')


# ---------------------------------------------------------------------------- chunk_rows

def _statement_bytes(prefix: str, chunk: list[str], separator: str) -> int:
    return len((prefix + separator.join(chunk)).encode('utf-8'))


def test_chunk_rows_bounds_rows():
    rows = [f'({i})' for i in range(25)]
    chunks = list(chunk_rows(rows, prefix_bytes=10, max_rows=10, max_bytes=10_000))
    assert [len(c) for c in chunks] == [10, 10, 5]
    assert [r for c in chunks for r in c] == rows


def test_chunk_rows_bounds_bytes():
    prefix = 'UPSERT INTO t VALUES '
    rows = [f"('{'x' * 90}')" for _ in range(50)]  # 96 bytes each
    chunks = list(chunk_rows(rows, prefix_bytes=len(prefix), max_rows=1000, max_bytes=1000))
    assert [r for c in chunks for r in c] == rows
    assert len(chunks) > 1
    for chunk in chunks:
        assert _statement_bytes(prefix, chunk, ', ') <= 1000
    # Packed, not one row per statement.
    assert all(len(c) >= 9 for c in chunks[:-1])


def test_chunk_rows_counts_utf8_bytes_not_characters():
    prefix = 'P '
    rows = ["('" + '😀' * 50 + "')" for _ in range(20)]  # 204 bytes, 54 characters
    chunks = list(chunk_rows(rows, prefix_bytes=len(prefix), max_rows=1000, max_bytes=1000))
    for chunk in chunks:
        assert _statement_bytes(prefix, chunk, ', ') <= 1000


def test_chunk_rows_bounds_bytes_with_a_longer_separator():
    # Deletes and reads join their conditions with ' OR ', not ', '.
    prefix = 'DELETE FROM t WHERE '
    rows = [f"(k = '{i:04d}')" for i in range(300)]
    chunks = list(chunk_rows(rows, prefix_bytes=len(prefix), max_rows=1000, max_bytes=400,
                             separator_bytes=4))
    assert [r for c in chunks for r in c] == rows
    for chunk in chunks:
        assert _statement_bytes(prefix, chunk, ' OR ') <= 400


def test_chunk_rows_exact_fit():
    prefix = 'P'
    rows = ['a' * 10, 'b' * 10]
    exact = _statement_bytes(prefix, rows, ', ')
    assert list(chunk_rows(rows, prefix_bytes=1, max_rows=10, max_bytes=exact)) == [rows]
    assert list(chunk_rows(rows, prefix_bytes=1, max_rows=10, max_bytes=exact - 1)) == [
        rows[:1], rows[1:]]


def test_chunk_rows_empty():
    assert list(chunk_rows([], prefix_bytes=10, max_rows=10, max_bytes=100)) == []


def test_chunk_rows_one_row_too_large_raises():
    rows = ['(1)', "('" + 'x' * 500 + "')", '(3)']
    with pytest.raises(RejectedRowsError, match='does not fit'):
        list(chunk_rows(rows, prefix_bytes=20, max_rows=10, max_bytes=200))


def test_chunk_rows_single_row_that_fits_alone():
    rows = ['x' * 170]
    assert list(chunk_rows(rows, prefix_bytes=20, max_rows=10, max_bytes=200)) == [rows]


# ---------------------------------------------------------------------------- clusters file

def _write(tmp_path, text):
    path = tmp_path / 'clusters.yaml'
    path.write_text(textwrap.dedent(text), encoding='utf-8')
    return str(path)


def test_load_impala_clusters(tmp_path):
    path = _write(tmp_path, """\
        default: main
        clusters:
          main: impala://etl@impala-a:21050/tsc?auth=LDAP&ssl=true&ca_cert=/etc/ssl/ca.pem
          eu:
            url: impala://etl@impala-eu:21050/tsc?auth=LDAP
            password_file: /var/run/secrets/impala-eu/password
          us:
            url: impala://impala-us/tsc?auth=PLAIN
            password_env: IMPALA_US_PASSWORD
          jwt:
            url: impala://impala-j/tsc?auth=JWT&http=true
            jwt_file: /var/run/secrets/jwt
        """)
    default, clusters = load_impala_clusters(path)
    assert default == 'main'
    assert set(clusters) == {'main', 'eu', 'us', 'jwt'}
    assert clusters['main'] == ImpalaCluster(
        name='main', url='impala://etl@impala-a:21050/tsc?auth=LDAP&ssl=true&ca_cert=/etc/ssl/ca.pem')
    assert clusters['eu'].password_file == '/var/run/secrets/impala-eu/password'
    assert clusters['us'].password_env == 'IMPALA_US_PASSWORD'
    assert clusters['jwt'].jwt_file == '/var/run/secrets/jwt'


def test_load_impala_clusters_single_cluster_is_the_default(tmp_path):
    path = _write(tmp_path, """\
        clusters:
          only: impala://h:21050/tsc
        """)
    default, clusters = load_impala_clusters(path)
    assert default == 'only'
    assert clusters == {'only': ImpalaCluster(name='only', url='impala://h:21050/tsc')}


@pytest.mark.parametrize('text, fragment', [
    ("""\
     clusters:
       a: impala://a/tsc
       b: impala://b/tsc
     """, '"default" must name one of'),
    ("""\
     default: c
     clusters:
       a: impala://a/tsc
     """, '"default" must name one of'),
    ("""\
     default: a
     clusters: {}
     """, 'non-empty "clusters"'),
    ('just a string\n', 'non-empty "clusters"'),
    ('', 'non-empty "clusters"'),
    ("""\
     clusters:
       a: {password_file: /x}
     """, 'needs a url'),
    ("""\
     clusters:
       a: 42
     """, 'needs a url'),
    ("""\
     clusters:
       a: {url: 'impala://a/tsc', user: etl}
     """, 'unknown keys'),
    ("""\
     clusters:
       a: {url: 'impala://a/tsc', ssl: true}
     """, 'unknown keys'),
    ("""\
     clusters:
       a: {url: 'postgres://a/tsc'}
     """, 'impala://'),
    ("""\
     clusters: [: not yaml
     """, 'not valid YAML'),
])
def test_load_impala_clusters_rejects(tmp_path, text, fragment):
    with pytest.raises(ValueError, match=fragment):
        load_impala_clusters(_write(tmp_path, text))


def test_load_impala_clusters_missing_file(tmp_path):
    with pytest.raises(ValueError, match='cannot read --impala_clusters'):
        load_impala_clusters(str(tmp_path / 'nope.yaml'))


@pytest.mark.parametrize('text', [
    """\
    clusters:
      a: {url: 'impala://a/tsc', password: S3cr3tPw}
    """,
    """\
    clusters:
      a: {url: 'impala://a/tsc', jwt: S3cr3tPw}
    """,
    """\
    clusters:
      a: impala://etl:S3cr3tPw@a/tsc?auth=PLAIN
    """,
    """\
    clusters:
      a: {url: 'impala://etl:S3cr3tPw@a/tsc?auth=LDAP'}
    """,
])
def test_load_impala_clusters_refuses_inline_secrets_without_echoing_them(tmp_path, text):
    with pytest.raises(ValueError) as caught:
        load_impala_clusters(_write(tmp_path, text))
    assert 'S3cr3tPw' not in str(caught.value)


# ---------------------------------------------------------------------------- connection settings

@pytest.fixture
def captured_connect(monkeypatch):
    """Replaces impyla's connect: records its keyword arguments, connects nowhere."""
    import impala.dbapi

    calls = []

    def connect(**kwargs):
        calls.append(kwargs)
        return object()

    monkeypatch.setattr(impala.dbapi, 'connect', connect)
    for name in ('IMPALA_PASSWORD', 'IMPALA_PASSWORD_FILE', 'IMPALA_JWT', 'IMPALA_JWT_FILE'):
        monkeypatch.delenv(name, raising=False)
    return calls


def test_tls_without_ca_cert_warns_and_does_not_verify(captured_connect, caplog):
    writer = ImpalaWriter.from_url('impala://h:21050/tsc?ssl=true')
    assert 'NOT verified' in caplog.text
    writer._connect()
    assert captured_connect[0]['use_ssl'] is True
    assert captured_connect[0]['verify_cert'] is False


def test_tls_with_ca_cert_verifies(captured_connect, caplog):
    writer = ImpalaWriter.from_url('impala://h:21050/tsc?ssl=true&ca_cert=/etc/ssl/ca.pem')
    assert 'NOT verified' not in caplog.text
    writer._connect()
    assert captured_connect[0]['ca_cert'] == '/etc/ssl/ca.pem'
    assert captured_connect[0]['verify_cert'] is True


def test_connect_settings_and_secrets(captured_connect, caplog, tmp_path, monkeypatch):
    caplog.set_level('DEBUG')
    secret = tmp_path / 'pw'
    secret.write_text('S3cr3tPw\n', encoding='utf-8')
    monkeypatch.setenv('IMPALA_PASSWORD_FILE', str(secret))
    ImpalaWriter.from_url('impala://etl@h:1/tsc?auth=LDAP&http=true&http_path=cli&timeout=3'
                          )._connect()
    kwargs = captured_connect[-1]
    assert kwargs['password'] == 'S3cr3tPw'
    assert (kwargs['host'], kwargs['port'], kwargs['database'], kwargs['user']) == (
        'h', 1, 'tsc', 'etl')
    assert kwargs['auth_mechanism'] == 'LDAP' and kwargs['timeout'] == 3.0
    assert kwargs['use_http_transport'] is True and kwargs['http_path'] == 'cli'
    monkeypatch.setenv('IMPALA_PASSWORD', 'EnvPw')  # the variable wins over the file
    ImpalaWriter.from_url('impala://etl@h:1/tsc?auth=PLAIN')._connect()
    assert captured_connect[-1]['password'] == 'EnvPw'
    ImpalaWriter.from_url('impala://h:1/tsc')._connect()
    assert 'password' not in captured_connect[-1]  # NOSASL sends none
    cluster = ImpalaCluster(name='eu', url='impala://etl@h:1/tsc?auth=PLAIN',
                            password_file=str(secret))
    ImpalaWriter(parse_impala_url(cluster.url), secrets=cluster)._connect()
    assert captured_connect[-1]['password'] == 'S3cr3tPw'  # the cluster's own file first
    assert 'S3cr3tPw' not in caplog.text and 'EnvPw' not in caplog.text
