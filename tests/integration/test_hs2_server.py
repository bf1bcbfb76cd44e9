"""Integration tests: real impyla 0.24 client against testing.hs2_server (SQLite-backed HS2).

impyla parameter substitution facts (impala.interface._bind_parameters, verified here and in
test_impyla_substitution_sharp_edges):

* impyla never sends parameters to the server: it renders them into the SQL text client-side.
  ``impala.dbapi.paramstyle`` is 'pyformat', but a list/tuple of parameters is substituted for
  ``%s``, ``?`` and ``:N`` markers alike (regex ``\\?|%s|:(\\d+)``), a dict for ``:name`` and
  ``%(name)s``.  ``cursor.execute(sql, params, configuration={'paramstyle': 'format'})``
  limits list substitution to one marker kind.
* The markers are found anywhere in the SQL text, INCLUDING inside string literals written in
  the statement: with list parameters ``'12:30'`` raises ProgrammingError (``:30`` is marker
  30) and ``'00:00:00'`` is silently replaced (``:00`` is index -1, i.e. the LAST parameter);
  ``'?'`` consumes a parameter.  With dict parameters every ``:word`` in the text becomes
  ``%(word)s`` (KeyError) and a bare ``%`` breaks ``%``-formatting (write ``%%``).  So: bind
  every literal that may contain ``?``, ``%`` or ``:`` instead of writing it in the SQL text.
* Substitution is a single pass: ``?``, ``%s``, ``:1``, ``%(x)s`` inside parameter VALUES
  are safe.
* str values are quoted as ``'...'`` with only ``\\``, newline, CR, ``'`` and ``"`` backslash
  escaped; tab, NUL and every other character go through raw (the server's lexer keeps them).
* None -> NULL; other types via ``str()``: True -> ``True``, 1.5 -> ``1.5``, bytes ->
  ``b'..'`` (not a valid literal: the server rejects the statement); datetime/date -> quoted.
* An empty parameter list/dict means no substitution at all (``if parameters:``).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from impala.dbapi import connect
from impala.error import HiveServer2Error, OperationalError, ProgrammingError
from impala.interface import _bind_parameters
from thrift.transport.TTransport import TTransportException

from testing.hs2_server import HS2Server, translate

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]

CREATE_T = (
    "CREATE TABLE IF NOT EXISTS tsc.t (id BIGINT NOT NULL, s STRING, n INT, flag BOOLEAN, "
    "ts TIMESTAMP, x DOUBLE, PRIMARY KEY (id)) PARTITION BY HASH (id) PARTITIONS 4 "
    "STORED AS KUDU TBLPROPERTIES ('kudu.num_tablet_replicas' = '1')"
)

HOSTILE = [
    "'",
    '"',
    "\\",
    "\\\\'\\",
    "%",
    "%s %d %(x)s %%",
    "?",
    ":name :1 :00",
    "\n",
    "\t",
    "\r\n",
    "\0",
    "a\0b\x01\x1a\x7f",
    "😀 emoji \U0001f600 non-BMP",
    "ünïcödé 中文",
    "",
    "x" * 100_000,
    "it's a \"mix\" of \\n not-newline, '' and \\' and 100%",
]

# Network errors impyla lets through when the server goes away mid-call.
CONNECTION_ERRORS = (TTransportException, OSError, EOFError)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[HS2Server]:
    srv = HS2Server(tmp_path / "hs2.db", databases=["tsc"])
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


class Clients:
    """Opens impyla connections/cursors and closes them all (ignoring errors) at teardown."""

    def __init__(self) -> None:
        self._conns: list[Any] = []
        self._cursors: list[Any] = []

    def connect(self, port: int, **kwargs: Any) -> Any:
        params: dict[str, Any] = {
            "host": "127.0.0.1", "port": port, "auth_mechanism": "NOSASL", "timeout": 20,
        }
        params.update(kwargs)
        conn = connect(**params)
        self._conns.append(conn)
        return conn

    def cursor(self, port: int, **kwargs: Any) -> Any:
        kwargs.setdefault("database", "tsc")
        cur = self.connect(port, **kwargs).cursor()
        self._cursors.append(cur)
        return cur

    def close_all(self) -> None:
        for cur in self._cursors:
            with contextlib.suppress(Exception):
                cur.close()
        for conn in self._conns:
            with contextlib.suppress(Exception):
                conn.close()


@pytest.fixture
def clients() -> Iterator[Clients]:
    c = Clients()
    try:
        yield c
    finally:
        c.close_all()


@pytest.fixture
def cur(server: HS2Server, clients: Clients) -> Any:
    cursor = clients.cursor(server.port)
    cursor.execute(CREATE_T)
    return cursor


def _rows(cursor: Any, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    cursor.execute(sql, params)
    return cursor.fetchall()


# --------------------------------------------------------------------------- data round trips


def test_upsert_hostile_strings_round_trip(cur: Any) -> None:
    values_sql = ", ".join(["(%s, %s)"] * len(HOSTILE))
    params: list[Any] = []
    for i, value in enumerate(HOSTILE):
        params += [i, value]
    cur.execute(f"UPSERT INTO tsc.t (id, s) VALUES {values_sql}", params)
    assert cur.rowcount == len(HOSTILE)
    got = _rows(cur, "SELECT id, s FROM t ORDER BY id")
    assert got == list(enumerate(HOSTILE))
    # the same values compared server-side through a bound WHERE literal
    for i, value in enumerate(HOSTILE):
        assert _rows(cur, "SELECT id FROM tsc.t WHERE s = %s", [value]) == [(i,)]


def test_upsert_with_named_parameters(cur: Any) -> None:
    row = {"id": 7, "s": "named: %s ? :id %(id)s ' \" \\ \0 😀"}
    cur.execute("UPSERT INTO t (id, s) VALUES (:id, :s)", row)
    assert _rows(cur, "SELECT s FROM t WHERE id = 7") == [(row["s"],)]
    cur.execute("UPSERT INTO t (id, s) VALUES (%(id)s, %(s)s)", {"id": 8, "s": "pyformat %"})
    assert _rows(cur, "SELECT s FROM t WHERE id = 8") == [("pyformat %",)]


def test_upsert_replaces_full_row_and_insert_delete(cur: Any) -> None:
    cur.execute(
        "UPSERT INTO t (id, s, n, flag, x) VALUES (1, 'a', 5, true, 1.5), (2, 'b', 6, false, 2)"
    )
    cur.execute("UPSERT INTO t (id, s) VALUES (1, 'a2')")  # omitted columns become NULL
    assert _rows(cur, "SELECT id, s, n, flag, x FROM t ORDER BY id") == [
        (1, "a2", None, None, None),
        (2, "b", 6, False, 2.0),
    ]
    cur.execute("INSERT INTO t (id, s) VALUES (3, 'c')")
    assert cur.rowcount == 1
    cur.execute("DELETE FROM t WHERE id IN (1, 3)")
    assert cur.rowcount == 2
    assert _rows(cur, "SELECT id FROM t") == [(2,)]
    cur.execute("DELETE FROM tsc.t WHERE s = %s", ["b"])
    assert _rows(cur, "SELECT count(*) FROM t") == [(0,)]


def test_select_types_nulls_and_paging(cur: Any) -> None:
    rows = [(i, None if i % 3 == 0 else f"s{i}", i * 10 if i % 2 else None) for i in range(25)]
    cur.execute(
        "UPSERT INTO t (id, s, n, flag, ts) VALUES "
        + ", ".join(["(%s, %s, %s, %s, %s)"] * len(rows)),
        [v for (i, s, n) in rows for v in (i, s, n, i % 2 == 0, "2026-12-04 10:11:12.5")],
    )
    cur.execute("SELECT id, s, n, flag, ts, x FROM t ORDER BY id")
    assert [d[:2] for d in cur.description] == [
        ("id", "BIGINT"), ("s", "STRING"), ("n", "INT"), ("flag", "BOOLEAN"),
        ("ts", "TIMESTAMP"), ("x", "DOUBLE"),
    ]
    first = cur.fetchmany(10)
    rest = cur.fetchall()
    got = first + rest
    assert cur.rowcount == 25
    assert [(r[0], r[1], r[2]) for r in got] == rows
    assert got[0][3] is True and got[1][3] is False
    assert got[0][4].isoformat() == "2026-12-04T10:11:12.500000"
    assert all(r[5] is None for r in got)
    # expression columns are typed from their values
    assert _rows(cur, "SELECT count(*), max(id), 'lit', 1.25, NULL FROM t") == [
        (25, 24, "lit", 1.25, None)
    ]
    cur.execute("SELECT id FROM t WHERE id < 0")
    assert cur.fetchall() == []
    assert cur.description[0][:2] == ("id", "BIGINT")


def test_small_fetch_batches(server: HS2Server, clients: Clients) -> None:
    cursor = clients.cursor(server.port)
    cursor.execute("CREATE TABLE p (id BIGINT PRIMARY KEY) STORED AS KUDU")
    cursor.execute("INSERT INTO p VALUES " + ", ".join(f"({i})" for i in range(50)))
    cursor.arraysize = 7  # impyla then asks for 7 rows per FetchResults
    cursor.execute("SELECT id FROM p ORDER BY id")
    assert [r[0] for r in cursor.fetchall()] == list(range(50))


def test_concurrent_writers(server: HS2Server, cur: Any, clients: Clients) -> None:
    cursors = [clients.cursor(server.port) for _ in range(4)]
    errors: list[BaseException] = []

    def work(n: int, cursor: Any) -> None:
        try:
            for i in range(25):
                cursor.execute("UPSERT INTO t (id, s) VALUES (%s, %s)", [n * 100 + i, f"w{n}"])
        except Exception as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n, c)) for n, c in enumerate(cursors)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert errors == []
    assert _rows(cur, "SELECT count(*) FROM t") == [(100,)]


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "sql",
    [
        "COMPUTE STATS t",
        "SHOW TABLES",
        "INSERT OR IGNORE INTO t (id) VALUES (1)",
        "INSERT INTO t (id) VALUES (1) ON CONFLICT DO NOTHING",
        "PRAGMA table_info(t)",
        "SELECT * FROM t WHERE id = ?",
        "SELECT 1; SELECT 2",
        "SELECT 'unterminated",
        "SELECT * FROM no_such_table",
        "CREATE TABLE c AS SELECT 1",
    ],
)
def test_rejected_statements_raise(cur: Any, server: HS2Server, sql: str) -> None:
    with pytest.raises(HiveServer2Error, match="AnalysisException"):
        cur.execute(sql)
    assert server.statements[-1].statement == sql
    assert server.statements[-1].success is False
    cur.execute("SELECT 1")  # the session is still usable
    assert cur.fetchall() == [(1,)]


def test_bytes_parameter_is_rejected(cur: Any) -> None:
    with pytest.raises(HiveServer2Error):
        cur.execute("UPSERT INTO t (id, s) VALUES (%s, %s)", [1, b"raw"])


def test_statement_over_max_size(tmp_path: Path, clients: Clients) -> None:
    with HS2Server(tmp_path / "small.db", max_statement_bytes=1000) as srv:
        cursor = clients.cursor(srv.port, database=None)
        cursor.execute("SELECT %s", ["x" * 900])
        with pytest.raises(HiveServer2Error, match="exceeds the maximum statement length"):
            cursor.execute("SELECT %s", ["x" * 1000])
        clients.close_all()


def test_statement_over_default_16mib_limit(server: HS2Server, cur: Any) -> None:
    assert server.max_statement_bytes == 16 * 1024 * 1024
    with pytest.raises(HiveServer2Error, match="16777216 bytes"):
        cur.execute("SELECT %s", ["y" * (16 * 1024 * 1024)])


def test_use_database_and_qualifiers(server: HS2Server, clients: Clients) -> None:
    with pytest.raises(HiveServer2Error, match="Database does not exist"):
        clients.cursor(server.port, database="nosuch")
    cursor = clients.cursor(server.port, database=None)
    cursor.execute("CREATE DATABASE IF NOT EXISTS other")
    cursor.execute("CREATE DATABASE IF NOT EXISTS other")
    cursor.execute("USE other")
    cursor.execute("CREATE TABLE IF NOT EXISTS other.q (k STRING PRIMARY KEY, v BIGINT)")
    cursor.execute("UPSERT INTO other.q VALUES ('a', 1)")
    assert _rows(cursor, "SELECT q.k, other.q.v FROM other.q") == [("a", 1)]
    assert _rows(cursor, "SELECT k FROM q") == [("a",)]
    cursor.execute("DROP TABLE IF EXISTS other.q PURGE")
    cursor.execute("DROP DATABASE other")
    with pytest.raises(HiveServer2Error):
        cursor.execute("USE other")


# --------------------------------------------------------------------------- auth


def test_plain_auth(tmp_path: Path, clients: Clients) -> None:
    with HS2Server(tmp_path / "auth.db", users={"alice": "s3cret"}) as srv:
        good = clients.cursor(srv.port, auth_mechanism="PLAIN", user="alice",
                              password="s3cret", database=None)
        good.execute("SELECT 42")
        assert good.fetchall() == [(42,)]
        with pytest.raises(TTransportException, match="Error validating the login"):
            clients.connect(srv.port, auth_mechanism="PLAIN", user="alice", password="wrong")
        with pytest.raises(TTransportException):
            clients.connect(srv.port, auth_mechanism="PLAIN", user="bob", password="s3cret")
        with pytest.raises(CONNECTION_ERRORS):  # NOSASL client against a SASL server
            clients.connect(srv.port, auth_mechanism="NOSASL").cursor()
        assert srv.stats["connections_auth_failed"] >= 3
        clients.close_all()


# --------------------------------------------------------------------------- faults


def test_refuse_connections_plain_connect_raises(tmp_path: Path, clients: Clients) -> None:
    with HS2Server(tmp_path / "r.db", users={"u": "p"}) as srv:
        srv.refuse_connections(1)
        with pytest.raises(TTransportException):
            clients.connect(srv.port, auth_mechanism="PLAIN", user="u", password="p")
        assert srv.stats["connections_refused"] == 1
        conn = clients.connect(srv.port, auth_mechanism="PLAIN", user="u", password="p")
        assert conn.cursor() is not None
        clients.close_all()


def test_refuse_connections_nosasl(server: HS2Server, clients: Clients) -> None:
    server.refuse_connections()  # until cleared
    # NOSASL: the TCP connect succeeds (the kernel accepts), the first RPC (OpenSession in
    # cursor(), retried 3 times on fresh connections by impyla) fails.
    with pytest.raises(CONNECTION_ERRORS):
        clients.connect(server.port).cursor()
    assert server.stats["connections_refused"] >= 3
    server.clear_faults()
    cursor = clients.cursor(server.port)
    cursor.execute("SELECT 1")
    assert cursor.fetchall() == [(1,)]


def test_drop_after_statements(server: HS2Server, cur: Any, clients: Clients) -> None:
    server.drop_after_statements(2)
    cur.execute("UPSERT INTO t (id) VALUES (1)")
    cur.execute("UPSERT INTO t (id) VALUES (2)")
    with pytest.raises(CONNECTION_ERRORS):
        cur.execute("UPSERT INTO t (id) VALUES (3)")
    assert server.stats["connections_dropped"] == 1
    last = server.statements[-1]
    assert (last.statement, last.success) == ("UPSERT INTO t (id) VALUES (3)", False)
    fresh = clients.cursor(server.port)
    assert _rows(fresh, "SELECT id FROM t ORDER BY id") == [(1,), (2,)]  # 3 not executed
    # execute=True: the statement commits, then the reply is lost
    server.drop_after_statements(0, execute=True)
    with pytest.raises(CONNECTION_ERRORS):
        fresh.execute("UPSERT INTO t (id) VALUES (4)")
    again = clients.cursor(server.port)
    assert _rows(again, "SELECT id FROM t ORDER BY id") == [(1,), (2,), (4,)]


def test_fail_statements(server: HS2Server, cur: Any) -> None:
    server.fail_statements(r"^UPSERT", times=2, message="ImpalaRuntimeException: injected")
    for _ in range(2):
        with pytest.raises(HiveServer2Error, match="injected"):
            cur.execute("UPSERT INTO t (id) VALUES (1)")
    cur.execute("UPSERT INTO t (id) VALUES (1)")  # third attempt passes
    server.fail_statements("DELETE", phase="status")  # every time, as ERROR_STATE
    with pytest.raises(OperationalError, match="Injected failure"):
        cur.execute("DELETE FROM t WHERE id = 1")
    with pytest.raises(OperationalError):
        cur.execute("DELETE FROM t WHERE id = 1")
    assert server.stats["statements_failed_by_fault"] == 4
    server.clear_faults()
    cur.execute("DELETE FROM t WHERE id = 1")
    assert _rows(cur, "SELECT count(*) FROM t") == [(0,)]


def test_latency_setting_is_applied(server: HS2Server, cur: Any) -> None:
    assert server.stats.get("statements_delayed", 0) == 0
    server.set_latency_ms(2)
    assert server.faults.latency_ms == 2
    for _ in range(3):
        cur.execute("SELECT 1")
        cur.fetchall()
    assert server.stats["statements_delayed"] == 3
    server.clear_faults()
    assert server.faults.latency_ms == 0
    cur.execute("SELECT 1")
    assert server.stats["statements_delayed"] == 3


def test_expired_session(server: HS2Server, cur: Any, clients: Clients) -> None:
    cur.execute("SELECT 1")
    cur.fetchall()
    assert server.expire_sessions() >= 1
    with pytest.raises(HiveServer2Error, match="session expired"):
        cur.execute("SELECT 1")
    cur.close()  # CloseSession on an expired session is accepted
    fresh = clients.cursor(server.port)
    fresh.execute("SELECT 2")
    assert fresh.fetchall() == [(2,)]
    # expiring one session by id
    sid = server.statements[-1].session_id
    assert server.expire_session(sid)
    with pytest.raises(HiveServer2Error, match="session expired"):
        fresh.execute("SELECT 3")


def test_statements_recorded(server: HS2Server, clients: Clients) -> None:
    server.clear_statements()
    cursor = clients.cursor(server.port)  # runs "USE tsc"
    cursor.execute("SELECT %s", ["a'b"])
    cursor.fetchall()
    with pytest.raises(HiveServer2Error):
        cursor.execute("BOGUS")
    recs = server.statements
    assert [(r.statement, r.success) for r in recs] == [
        ("USE tsc", True), ("SELECT 'a\\'b'", True), ("BOGUS", False),
    ]
    assert len({r.session_id for r in recs}) == 1
    assert recs[0].session_id in server.session_ids
    assert recs[2].error is not None and "AnalysisException" in recs[2].error
    assert recs[0].timestamp <= recs[1].timestamp <= recs[2].timestamp
    assert server.stats["sessions_opened"] >= 1
    server.clear_statements()
    assert server.statements == []


# --------------------------------------------------------------------------- unit-ish checks


def test_translate_rules() -> None:
    tr = translate(CREATE_T, ["default", "tsc"])
    assert tr.kind == "ddl"
    assert tr.sql == (
        'CREATE TABLE IF NOT EXISTS "t" ("id" INTEGER BIGINT NOT NULL, "s" TEXT STRING, '
        '"n" INTEGER INT, "flag" INTEGER BOOLEAN, "ts" TEXT TIMESTAMP, "x" REAL DOUBLE, '
        'PRIMARY KEY ("id"))'
    )
    tr = translate("UPSERT INTO tsc.t (id, s) VALUES (1, 'it\\'s\\n\\t\\0\\Z\\%\\q')",
                   ["tsc"])
    assert tr.sql == 'INSERT OR REPLACE INTO t ( id , s ) VALUES ( 1 , ? )'
    assert tr.params == ["it's\n\t\0\x1a\\%q"]
    assert translate('SELECT "dq", `weird col` FROM t', []).params == ["dq"]


def test_impyla_substitution_sharp_edges() -> None:
    hostile = "a?%s:1\t\0\\'\"\n\r"
    assert _bind_parameters("SELECT %s", [hostile]) == "SELECT 'a?%s:1\t\0\\\\\\'\\\"\\n\\r'"
    assert _bind_parameters("SELECT %s, '00:00:00'", ["v"]) == "SELECT 'v', '00'v''v''"
    with pytest.raises(ProgrammingError):
        _bind_parameters("SELECT %s, '12:30'", ["v"])
    with pytest.raises(KeyError):
        _bind_parameters("SELECT :a, 'x:y'", {"a": 1})
    with pytest.raises(TypeError):
        _bind_parameters("SELECT :a, '50%'", {"a": 1})
    assert _bind_parameters("SELECT %s, %s, %s", [True, b"b", None]) == "SELECT True, b'b', NULL"
    assert _bind_parameters("SELECT %s, '?'", ["x"], "format") == "SELECT 'x', '?'"


# --------------------------------------------------------------------------- CLI


def _read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        raise AssertionError("server did not print its address in time")
    return proc.stdout.readline()


@pytest.fixture
def spawn() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []

    def _spawn(*args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "testing.hs2_server", *args],
            cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        procs.append(proc)
        return proc

    yield _spawn
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


def test_cli_subprocess(tmp_path: Path, spawn: Callable[..., subprocess.Popen[str]],
                        clients: Clients) -> None:
    db = tmp_path / "cli.db"
    pw = tmp_path / "pw"
    pw.write_text("hunter2\n", encoding="utf-8")
    proc = spawn("--host", "127.0.0.1", "--port", "0", "--database", str(db),
                 "--latency_ms", "1", "--user", "etl", "--password_file", str(pw))
    line = _read_line(proc, 20)
    assert line.startswith("listening on 127.0.0.1:"), line
    port = int(line.strip().rsplit(":", 1)[1])
    cursor = clients.cursor(port, auth_mechanism="PLAIN", user="etl", password="hunter2",
                            database=None)
    cursor.execute("CREATE TABLE IF NOT EXISTS kv (k STRING PRIMARY KEY, v BIGINT) "
                   "PARTITION BY HASH (k) PARTITIONS 2 STORED AS KUDU")
    cursor.execute("UPSERT INTO kv VALUES (%s, %s)", ["key'1", 10])
    assert _rows(cursor, "SELECT k, v FROM kv") == [("key'1", 10)]
    clients.close_all()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    with contextlib.closing(sqlite3.connect(db)) as check:
        assert check.execute("SELECT k, v FROM kv").fetchall() == [("key'1", 10)]
