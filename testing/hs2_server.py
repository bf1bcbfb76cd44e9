"""Loopback Impala-flavoured HiveServer2 server backed by SQLite, for tests and benchmarks."""

# Overview (kept out of the one-line module docstring on purpose)
# ---------------------------------------------------------------
# * Protocol: impyla's own generated ``ImpalaHiveServer2Service.Processor`` (HS2 methods plus
#   Impala's PingImpalaHS2Service / CloseImpalaOperation / GetRuntimeProfile / GetExecSummary),
#   one thread per connection, buffered transport, binary protocol.  Auth is NOSASL (``users``
#   is None) or SASL PLAIN (``users`` maps user -> password; a wrong password gets a SASL ERROR
#   frame and the socket is closed, so ``impala.dbapi.connect(auth_mechanism='PLAIN')`` raises).
# * Storage: one SQLite file; one sqlite3 connection per HS2 session (autocommit, WAL,
#   busy_timeout); non-SELECT statements are serialised by a server-wide lock.
# * Databases: a single namespace.  Known database names ('default', the constructor's
#   ``databases`` and those made by CREATE DATABASE, persisted in table ``_hs2_databases``)
#   are accepted by USE and stripped where they qualify a name (``db.t`` -> ``t``,
#   ``db.t.c`` -> ``t.c``).  DROP DATABASE only forgets the name, tables stay.
# * Translation (statement is lexed first; string literals are decoded with Impala's
#   backslash escapes and bound as SQLite parameters, so any text incl. NUL round-trips):
#     UPSERT INTO ...               -> INSERT OR REPLACE INTO ... (full row replace by key)
#     INSERT INTO [TABLE] ...       -> INSERT INTO ...   (duplicate keys fail, unlike Kudu)
#     UPDATE / DELETE / SELECT / WITH / VALUES -> as is
#     CREATE TABLE [IF NOT EXISTS] t (c TYPE [NOT NULL|NULL|PRIMARY KEY|DEFAULT lit|ENCODING x|
#       COMPRESSION x|BLOCK_SIZE n|COMMENT 's'], ..., PRIMARY KEY (a, b)) <anything after the
#       column list is dropped: PARTITION BY, STORED AS, TBLPROPERTIES, COMMENT>
#       -> CREATE TABLE with declared type "<AFFINITY> <IMPALA TYPE>", e.g. "TEXT STRING",
#          "INTEGER BIGINT", "INTEGER BOOLEAN", "TEXT TIMESTAMP", "REAL DOUBLE"; key columns
#          get NOT NULL.  The Impala type is used to type result columns.
#     CREATE DATABASE|SCHEMA [IF NOT EXISTS] x, DROP DATABASE|SCHEMA [IF EXISTS] x, USE x
#     DROP TABLE [IF EXISTS] t [PURGE]
#   Anything else (and SQLite-only syntax: INSERT OR, RETURNING, ON CONFLICT, PRAGMA, ``?``,
#   ``:x`` ...) is rejected with TStatus(ERROR_STATUS, 'AnalysisException: ...', 'HY000').

from __future__ import annotations

import argparse
import collections
import dataclasses
import logging
import os
import re
import secrets
import signal
import socket
import sqlite3
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from impala._thrift_gen.ImpalaService import ImpalaHiveServer2Service
from impala._thrift_gen.ImpalaService.ttypes import (
    TCloseImpalaOperationResp,
    TDmlResult,
    TGetExecSummaryResp,
    TGetRuntimeProfileResp,
    TPingImpalaHS2ServiceResp,
)
from impala._thrift_gen.TCLIService import ttypes as cli
from thrift.protocol.TBinaryProtocol import TBinaryProtocolAccelerated
from thrift.transport.TSocket import TSocket
from thrift.transport.TTransport import TBufferedTransport, TTransportBase, TTransportException

_LOGGER = logging.getLogger(__name__)

DEFAULT_MAX_STATEMENT_BYTES = 16 * 1024 * 1024  # Impala's MAX_STATEMENT_LENGTH_BYTES
_SQL_STATE = "HY000"
_CLOSED_PROFILES_KEPT = 1000

# --------------------------------------------------------------------------- lexer


class AnalysisError(Exception):
    """A statement the server cannot accept; reported as 'AnalysisException: ...'."""


@dataclasses.dataclass
class _Tok:
    kind: str  # ws, comment, str, ident, word, number, op, other
    text: str
    value: str = ""


_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<comment>--[^\n]*|/\*.*?\*/)
  | (?P<ident>`[^`]*`)
  | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op><>|!=|<=|>=|\|\||==|[-+*/%=<>(),.;~&|^!])
  | (?P<other>.)
    """,
    re.S | re.X,
)

# Impala string-literal escapes; \% and \_ keep their backslash (LIKE patterns); any other
# escaped character stands for itself.
_ESCAPES = {
    "0": "\0", "\\": "\\", "b": "\b", "n": "\n", "r": "\r", "t": "\t", "Z": "\x1a",
    "'": "'", '"': '"', "%": "\\%", "_": "\\_",
}


def _read_string(text: str, start: int) -> tuple[str, int]:
    """Decode the quoted literal starting at ``start``; returns (value, index after it)."""
    quote = text[start]
    out: list[str] = []
    i = start + 1
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            if i + 1 >= n:
                break
            nxt = text[i + 1]
            out.append(_ESCAPES.get(nxt, nxt))
            i += 2
            continue
        if ch == quote:
            return "".join(out), i + 1
        out.append(ch)
        i += 1
    raise AnalysisError("Syntax error: unterminated string literal")


def lex(text: str) -> list[_Tok]:
    """Split Impala SQL into tokens; string literals carry their decoded value."""
    toks: list[_Tok] = []
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch in "'\"":
            value, end = _read_string(text, i)
            toks.append(_Tok("str", text[i:end], value))
            i = end
            continue
        m = _TOKEN_RE.match(text, i)
        assert m is not None and m.lastgroup is not None  # 'other' matches any char
        kind = m.lastgroup
        tok = _Tok(kind, m.group())
        if kind == "ident":
            tok.value = tok.text[1:-1]
        elif kind == "word":
            tok.value = tok.text
        toks.append(tok)
        i = m.end()
    return toks


def _is_name(tok: _Tok) -> bool:
    return tok.kind in ("word", "ident")


def _kw(tok: _Tok | None) -> str:
    return tok.text.upper() if tok is not None and tok.kind == "word" else ""


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _sqlite_literal(value: str) -> str:
    """A SQLite constant for ``value`` usable in DDL (where parameters are not allowed)."""
    if any(ord(c) < 32 for c in value):
        return "(CAST(X'" + value.encode("utf-8").hex() + "' AS TEXT))"
    return "'" + value.replace("'", "''") + "'"


def _emit(toks: Iterable[_Tok], params: list[Any] | None) -> str:
    """Re-emit tokens as SQLite text; string literals become ``?`` (bound) or inline constants."""
    parts: list[str] = []
    for tok in toks:
        if tok.kind == "str":
            if params is None:
                parts.append(_sqlite_literal(tok.value))
            else:
                params.append(tok.value)
                parts.append("?")
        elif tok.kind == "ident":
            parts.append(_quote_ident(tok.value))
        else:
            parts.append(tok.text)
    return " ".join(parts)


# --------------------------------------------------------------------------- translation

_SQLITE_ONLY_WORDS = frozenset({
    "RETURNING", "CONFLICT", "AUTOINCREMENT", "ROWID", "PRAGMA", "ATTACH", "DETACH", "GLOB",
    "INDEXED", "ISNULL", "NOTNULL", "VACUUM",
})

# Impala type -> (SQLite affinity, canonical Impala type)
_TYPE_MAP: dict[str, tuple[str, str]] = {
    "STRING": ("TEXT", "STRING"), "VARCHAR": ("TEXT", "VARCHAR"), "CHAR": ("TEXT", "CHAR"),
    "BIGINT": ("INTEGER", "BIGINT"), "INT": ("INTEGER", "INT"), "INTEGER": ("INTEGER", "INT"),
    "SMALLINT": ("INTEGER", "SMALLINT"), "TINYINT": ("INTEGER", "TINYINT"),
    "BOOLEAN": ("INTEGER", "BOOLEAN"), "TIMESTAMP": ("TEXT", "TIMESTAMP"),
    "DATE": ("TEXT", "DATE"), "DOUBLE": ("REAL", "DOUBLE"), "FLOAT": ("REAL", "FLOAT"),
    "REAL": ("REAL", "DOUBLE"),
}

_SKIPPED_COLUMN_OPTIONS = frozenset({"ENCODING", "COMPRESSION", "BLOCK_SIZE", "COMMENT"})


@dataclasses.dataclass
class Translated:
    """A statement translated for SQLite."""

    kind: str  # query, dml, ddl, use, create_db, drop_db
    sql: str = ""
    params: list[Any] = dataclasses.field(default_factory=list)
    name: str = ""  # database name for use/create_db/drop_db
    if_clause: bool = False  # IF [NOT] EXISTS given
    tables: tuple[str, ...] = ()  # names mentioned (for typing result columns)


def _strip_db_qualifiers(sig: list[_Tok], known_dbs: set[str]) -> list[_Tok]:
    out: list[_Tok] = []
    i = 0
    while i < len(sig):
        tok = sig[i]
        if (
            _is_name(tok)
            and tok.value.lower() in known_dbs
            and i + 2 < len(sig)
            and sig[i + 1].text == "."
            and _is_name(sig[i + 2])
            and not (out and out[-1].text == ".")
        ):
            i += 2
            continue
        out.append(tok)
        i += 1
    return out


def _matching_paren(sig: list[_Tok], open_idx: int) -> int:
    depth = 0
    for j in range(open_idx, len(sig)):
        if sig[j].text == "(":
            depth += 1
        elif sig[j].text == ")":
            depth -= 1
            if depth == 0:
                return j
    raise AnalysisError("Syntax error: unbalanced parentheses")


def _split_commas(toks: list[_Tok]) -> list[list[_Tok]]:
    parts: list[list[_Tok]] = [[]]
    depth = 0
    for tok in toks:
        if tok.text == "(":
            depth += 1
        elif tok.text == ")":
            depth -= 1
        if tok.text == "," and depth == 0:
            parts.append([])
        else:
            parts[-1].append(tok)
    return parts


def _name_list(toks: list[_Tok]) -> list[str]:
    names = [t.value for t in toks if _is_name(t)]
    if not names or any(not _is_name(t) and t.text != "," for t in toks):
        raise AnalysisError("Syntax error in column list")
    return names


def _translate_column(defn: list[_Tok]) -> tuple[str, str, list[str], bool]:
    """Returns (name, sqlite definition without NOT NULL fix-up, inline pk cols, not_null)."""
    if len(defn) < 2 or not _is_name(defn[0]) or defn[1].kind != "word":
        raise AnalysisError("Syntax error in column definition: " + _emit(defn, None))
    name = defn[0].value
    impala_type = defn[1].text.upper()
    if impala_type not in _TYPE_MAP:
        raise AnalysisError(f"Unsupported type '{defn[1].text}' for column '{name}'")
    affinity, canonical = _TYPE_MAP[impala_type]
    i = 2
    if i < len(defn) and defn[i].text == "(":
        i = _matching_paren(defn, i) + 1  # VARCHAR(n) / CHAR(n): length dropped
    out = [_quote_ident(name), f"{affinity} {canonical}"]
    pk: list[str] = []
    not_null = False
    while i < len(defn):
        word = _kw(defn[i])
        nxt = _kw(defn[i + 1]) if i + 1 < len(defn) else ""
        if word == "NOT" and nxt == "NULL":
            out.append("NOT NULL")
            not_null = True
            i += 2
        elif word == "NULL":
            out.append("NULL")
            i += 1
        elif word == "PRIMARY" and nxt == "KEY":
            out.append("PRIMARY KEY")
            pk.append(name)
            i += 2
        elif word == "DEFAULT" and i + 1 < len(defn):
            j = i + 1
            sign = ""
            if defn[j].text in ("-", "+") and j + 1 < len(defn):
                sign = defn[j].text
                j += 1
            lit = defn[j]
            if lit.kind == "str":
                out.append("DEFAULT " + _sqlite_literal(lit.value))
            elif lit.kind == "number" or _kw(lit) in ("NULL", "TRUE", "FALSE"):
                text = sign + lit.text
                out.append(f"DEFAULT ({text})" if sign else f"DEFAULT {text}")
            else:
                raise AnalysisError("Only literal DEFAULT values are supported")
            i = j + 1
        elif word in _SKIPPED_COLUMN_OPTIONS and i + 1 < len(defn):
            i += 2
        else:
            raise AnalysisError(f"Syntax error in column definition near '{defn[i].text}'")
    return name, " ".join(out), pk, not_null


def _translate_create_table(sig: list[_Tok]) -> Translated:
    i = 1
    if _kw(sig[i]) != "TABLE":
        raise AnalysisError(f"Unsupported statement: CREATE {sig[i].text}")
    i += 1
    if_not_exists = False
    if [_kw(t) for t in sig[i:i + 3]] == ["IF", "NOT", "EXISTS"]:
        if_not_exists = True
        i += 3
    if i >= len(sig) or not _is_name(sig[i]):
        raise AnalysisError("Syntax error: table name expected")
    table = sig[i].value
    i += 1
    if i >= len(sig) or sig[i].text != "(":
        raise AnalysisError("Only CREATE TABLE with a column list is supported")
    close = _matching_paren(sig, i)
    rest = sig[close + 1:]
    for k, tok in enumerate(rest):
        if _kw(tok) == "AS" and k + 1 < len(rest) and _kw(rest[k + 1]) in ("SELECT", "WITH"):
            raise AnalysisError("CREATE TABLE AS SELECT is not supported")
        if _kw(tok) == "LIKE":
            raise AnalysisError("CREATE TABLE LIKE is not supported")
    columns: list[tuple[str, str, bool]] = []
    pk_cols: list[str] = []
    table_pk: list[str] | None = None
    for defn in _split_commas(sig[i + 1:close]):
        if not defn:
            raise AnalysisError("Syntax error: empty column definition")
        if _kw(defn[0]) == "PRIMARY" and len(defn) > 3 and _kw(defn[1]) == "KEY":
            if defn[2].text != "(" or defn[-1].text != ")":
                raise AnalysisError("Syntax error in PRIMARY KEY clause")
            table_pk = _name_list(defn[3:-1])
            continue
        name, sql, pk, not_null = _translate_column(defn)
        columns.append((name, sql, not_null))
        pk_cols.extend(pk)
    if table_pk is not None:
        pk_cols.extend(table_pk)
    pk_lower = {c.lower() for c in pk_cols}
    parts = [
        sql + (" NOT NULL" if name.lower() in pk_lower and not not_null else "")
        for name, sql, not_null in columns
    ]
    if table_pk is not None:
        parts.append("PRIMARY KEY (" + ", ".join(_quote_ident(c) for c in table_pk) + ")")
    sql = "CREATE TABLE " + ("IF NOT EXISTS " if if_not_exists else "")
    sql += _quote_ident(table) + " (" + ", ".join(parts) + ")"
    return Translated("ddl", sql, tables=(table,))


def _db_statement(sig: list[_Tok], kind: str, if_words: list[str]) -> Translated:
    i = 2
    found_if = [_kw(t) for t in sig[i:i + len(if_words)]] == if_words
    if found_if:
        i += len(if_words)
    if i >= len(sig) or not _is_name(sig[i]):
        raise AnalysisError("Syntax error: database name expected")
    name = sig[i].value
    tail = [_kw(t) for t in sig[i + 1:]]
    allowed = {"CASCADE", "RESTRICT"} if kind == "drop_db" else set()
    if kind == "create_db" and tail[:1] == ["COMMENT"]:
        tail = []
    if any(w not in allowed for w in tail):
        raise AnalysisError("Syntax error near '" + sig[i + 1].text + "'")
    return Translated(kind, name=name, if_clause=found_if)


def translate(statement: str, known_dbs: Iterable[str] = ("default",)) -> Translated:
    """Translate one Impala statement into SQLite; raises AnalysisError if unsupported."""
    dbs = {d.lower() for d in known_dbs}
    sig = [t for t in lex(statement) if t.kind not in ("ws", "comment")]
    while sig and sig[-1].text == ";":
        sig.pop()
    if not sig:
        raise AnalysisError("Syntax error: empty statement")
    for tok in sig:
        if tok.text == ";":
            raise AnalysisError("Syntax error: only one statement per request is supported")
        if tok.kind == "other":
            raise AnalysisError(f"Syntax error: unexpected character '{tok.text}'")
        if _kw(tok) in _SQLITE_ONLY_WORDS:
            raise AnalysisError(f"Syntax error: unsupported keyword '{tok.text}'")
    first = _kw(sig[0])
    second = _kw(sig[1]) if len(sig) > 1 else ""
    if first == "USE":
        if len(sig) != 2 or not _is_name(sig[1]):
            raise AnalysisError("Syntax error: USE <database>")
        return Translated("use", name=sig[1].value)
    if first in ("CREATE", "DROP") and second in ("DATABASE", "SCHEMA"):
        if first == "CREATE":
            return _db_statement(sig, "create_db", ["IF", "NOT", "EXISTS"])
        return _db_statement(sig, "drop_db", ["IF", "EXISTS"])
    sig = _strip_db_qualifiers(sig, dbs)
    names = tuple(t.value for t in sig if _is_name(t))
    if first in ("SELECT", "WITH", "VALUES"):
        params: list[Any] = []
        return Translated("query", _emit(sig, params), params, tables=names)
    if first == "CREATE":
        return _translate_create_table(sig)
    if first == "DROP":
        if second != "TABLE":
            what = sig[1].text if len(sig) > 1 else ""
            raise AnalysisError(f"Unsupported statement: DROP {what}")
        body = sig[:-1] if _kw(sig[-1]) == "PURGE" else sig
        return Translated("ddl", _emit(body, None), tables=names)
    if first in ("INSERT", "UPSERT"):
        if second != "INTO":
            raise AnalysisError(f"Syntax error: {first} {sig[1].text if len(sig) > 1 else ''}")
        body = sig[2:]
        if body and _kw(body[0]) == "TABLE":
            body = body[1:]
        head = "INSERT OR REPLACE INTO " if first == "UPSERT" else "INSERT INTO "
        params = []
        return Translated("dml", head + _emit(body, params), params, tables=names)
    if first in ("DELETE", "UPDATE"):
        params = []
        return Translated("dml", _emit(sig, params), params, tables=names)
    raise AnalysisError(f"Unsupported statement: {sig[0].text}")


# --------------------------------------------------------------------------- result typing

_TYPE_IDS = {
    "BOOLEAN": cli.TTypeId.BOOLEAN_TYPE, "TINYINT": cli.TTypeId.TINYINT_TYPE,
    "SMALLINT": cli.TTypeId.SMALLINT_TYPE, "INT": cli.TTypeId.INT_TYPE,
    "BIGINT": cli.TTypeId.BIGINT_TYPE, "FLOAT": cli.TTypeId.FLOAT_TYPE,
    "DOUBLE": cli.TTypeId.DOUBLE_TYPE, "STRING": cli.TTypeId.STRING_TYPE,
    "TIMESTAMP": cli.TTypeId.TIMESTAMP_TYPE, "DATE": cli.TTypeId.DATE_TYPE,
}
_INT_RANGES = {
    "TINYINT": (-(2**7), 2**7 - 1), "SMALLINT": (-(2**15), 2**15 - 1),
    "INT": (-(2**31), 2**31 - 1), "BIGINT": (-(2**63), 2**63 - 1),
}
_TIMESTAMP_RE = re.compile(rb"\d+-\d+-\d+ \d+:\d+:\d+(\.\d+)?\Z")
_DATE_RE = re.compile(rb"\d+-\d+-\d+\Z")


def _impala_type_of_decl(decl: str) -> str | None:
    words = decl.upper().split()
    if len(words) == 2 and words[0] in ("TEXT", "INTEGER", "REAL"):
        return "STRING" if words[1] in ("VARCHAR", "CHAR") else words[1]
    if len(words) == 1:
        return {"INTEGER": "BIGINT", "INT": "BIGINT", "TEXT": "STRING", "REAL": "DOUBLE"}.get(
            words[0]
        )
    return None


def _fits(type_: str, values: list[Any]) -> bool:
    present = [v for v in values if v is not None]
    if type_ == "BOOLEAN":
        return all(type(v) is int and v in (0, 1) for v in present)
    if type_ in _INT_RANGES:
        lo, hi = _INT_RANGES[type_]
        return all(type(v) is int and lo <= v <= hi for v in present)
    if type_ in ("DOUBLE", "FLOAT"):
        return all(type(v) in (int, float) for v in present)
    if type_ == "STRING":
        return all(isinstance(v, bytes) for v in present)
    if type_ == "TIMESTAMP":
        return all(isinstance(v, bytes) and _TIMESTAMP_RE.match(v) for v in present)
    if type_ == "DATE":
        return all(isinstance(v, bytes) and _DATE_RE.match(v) for v in present)
    return False


def _infer_type(values: list[Any]) -> str:
    kinds = {type(v) for v in values if v is not None}
    if not kinds or kinds == {bytes}:
        return "STRING"
    if kinds == {int}:
        return "BIGINT"
    if kinds <= {int, float}:
        return "DOUBLE"
    return "STRING"


def _column_type(values: list[Any], declared: str | None) -> str:
    if declared is not None and declared in _TYPE_IDS and _fits(declared, values):
        return declared
    return _infer_type(values)


def _null_bitmap(values: list[Any]) -> bytes:
    bits = bytearray((len(values) + 7) // 8)
    for i, v in enumerate(values):
        if v is None:
            bits[i // 8] |= 1 << (i % 8)
    return bytes(bits)


def _to_bytes(v: Any) -> bytes:
    if isinstance(v, bytes):
        return v
    if isinstance(v, str):
        return v.encode("utf-8", "surrogatepass")
    return str(v).encode("ascii")


def _tcolumn(type_: str, values: list[Any]) -> cli.TColumn:
    nulls = _null_bitmap(values)
    if type_ == "BOOLEAN":
        return cli.TColumn(boolVal=cli.TBoolColumn(
            values=[bool(v) if v is not None else False for v in values], nulls=nulls))
    if type_ in _INT_RANGES:
        ints = [int(v) if v is not None else 0 for v in values]
        cls = {"TINYINT": (cli.TByteColumn, "byteVal"), "SMALLINT": (cli.TI16Column, "i16Val"),
               "INT": (cli.TI32Column, "i32Val"), "BIGINT": (cli.TI64Column, "i64Val")}[type_]
        return cli.TColumn(**{cls[1]: cls[0](values=ints, nulls=nulls)})
    if type_ in ("DOUBLE", "FLOAT"):
        return cli.TColumn(doubleVal=cli.TDoubleColumn(
            values=[float(v) if v is not None else 0.0 for v in values], nulls=nulls))
    return cli.TColumn(stringVal=cli.TStringColumn(
        values=[_to_bytes(v) if v is not None else b"" for v in values], nulls=nulls))


# --------------------------------------------------------------------------- faults / records


@dataclasses.dataclass(frozen=True)
class StatementRecord:
    """One statement received by ExecuteStatement."""

    session_id: str
    statement: str
    success: bool
    error: str | None
    timestamp: float
    connection_id: int


@dataclasses.dataclass
class _FailRule:
    pattern: re.Pattern[str]
    remaining: int | None
    message: str
    phase: str


class Faults:
    """Thread-safe fault-injection settings; change them at any time while serving."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._refuse: int | None = 0  # None = refuse until cleared
        self._drop_after: int | None = None
        self._drop_execute = False
        self._rules: list[_FailRule] = []
        self._latency_ms = 0.0

    def refuse_connections(self, n: int | None = None) -> None:
        """Close the next ``n`` accepted sockets at once (``None``: all until cleared)."""
        with self._lock:
            self._refuse = n

    def drop_after_statements(self, n: int, execute: bool = False) -> None:
        """Let ``n`` more statements through, then close the socket of the next one.

        The dropped statement is not replied to; with ``execute=True`` it is executed first
        (reply lost after commit), otherwise it is not executed.  One-shot.
        """
        with self._lock:
            self._drop_after = n
            self._drop_execute = execute

    def fail_statements(
        self,
        pattern: str | re.Pattern[str],
        times: int | None = None,
        message: str | None = None,
        phase: str = "execute",
    ) -> None:
        """Fail statements whose text matches ``pattern`` (re.search), the first ``times`` ones.

        phase='execute': ExecuteStatement returns an error status (impyla raises
        HiveServer2Error); phase='status': the operation ends in ERROR_STATE (OperationalError).
        """
        if phase not in ("execute", "status"):
            raise ValueError("phase must be 'execute' or 'status'")
        compiled = re.compile(pattern) if isinstance(pattern, str) else pattern
        text = message or f"Injected failure for statements matching {compiled.pattern!r}"
        with self._lock:
            self._rules.append(_FailRule(compiled, times, text, phase))

    def set_latency_ms(self, ms: float) -> None:
        """Sleep this long in every ExecuteStatement before executing."""
        with self._lock:
            self._latency_ms = float(ms)

    @property
    def latency_ms(self) -> float:
        with self._lock:
            return self._latency_ms

    def clear(self) -> None:
        """Remove every injected fault and set latency back to 0."""
        with self._lock:
            self._refuse = 0
            self._drop_after = None
            self._drop_execute = False
            self._rules = []
            self._latency_ms = 0.0

    def _take_refusal(self) -> bool:
        with self._lock:
            if self._refuse is None:
                return True
            if self._refuse > 0:
                self._refuse -= 1
                return True
            return False

    def _take_drop(self) -> tuple[bool, bool]:
        """(drop this statement?, execute it first?)"""
        with self._lock:
            if self._drop_after is None:
                return False, False
            if self._drop_after > 0:
                self._drop_after -= 1
                return False, False
            self._drop_after = None
            return True, self._drop_execute

    def _take_failure(self, statement: str) -> _FailRule | None:
        with self._lock:
            for rule in self._rules:
                if rule.remaining == 0 or not rule.pattern.search(statement):
                    continue
                if rule.remaining is not None:
                    rule.remaining -= 1
                return rule
            return None


# --------------------------------------------------------------------------- sessions / ops


class _Session:
    def __init__(self, user: str, db: sqlite3.Connection, connection_id: int) -> None:
        self.guid = secrets.token_bytes(16)
        self.secret = secrets.token_bytes(16)
        self.id = self.guid.hex()
        self.user = user
        self.db = db
        self.current_database = "default"
        self.connection_id = connection_id
        self.expired = False
        self.lock = threading.Lock()


class _Operation:
    def __init__(self, session: _Session, kind: str) -> None:
        self.guid = secrets.token_bytes(16)
        self.secret = secrets.token_bytes(16)
        self.session = session
        self.kind = kind
        self.has_result_set = False
        self.names: list[str] = []
        self.types: list[str] = []
        self.columns: list[list[Any]] = []
        self.num_rows = 0
        self.pos = 0
        self.rows_modified = 0
        self.error: str | None = None
        self.started = time.time()

    def handle(self) -> cli.TOperationHandle:
        return cli.TOperationHandle(
            operationId=cli.THandleIdentifier(guid=self.guid, secret=self.secret),
            operationType=cli.TOperationType.EXECUTE_STATEMENT,
            hasResultSet=self.has_result_set,
        )

    def profile(self) -> str:
        return (
            f"Query (id={self.guid.hex()}):\n"
            f"  Session ID: {self.session.id}\n"
            f"  Query State: {'EXCEPTION' if self.error else 'FINISHED'}\n"
            f"  NumModifiedRows: {self.rows_modified}\n"
            f"  NumRowErrors: 0\n"
        )


def _ok() -> cli.TStatus:
    return cli.TStatus(statusCode=cli.TStatusCode.SUCCESS_STATUS)


def _error(message: str) -> cli.TStatus:
    return cli.TStatus(
        statusCode=cli.TStatusCode.ERROR_STATUS, errorMessage=message, sqlState=_SQL_STATE,
        errorCode=0,
    )


class _DroppedConnection(TTransportException):
    """Raised from a handler to make the processor loop drop the connection unanswered."""


def _sqlite_error_message(exc: sqlite3.Error) -> str:
    text = str(exc)
    m = re.match(r"no such table: (.*)", text)
    if m:
        return f"AnalysisException: Could not resolve table reference: '{m.group(1)}'"
    if isinstance(exc, sqlite3.IntegrityError):
        return f"ImpalaRuntimeException: Kudu error(s) reported: {text}"
    return f"AnalysisException: {text}"


def _name_matcher(pattern: str | None) -> Callable[[str], bool]:
    if pattern in (None, "", "*", ".*", "%"):
        return lambda _name: True
    assert pattern is not None
    regex = "".join(
        ".*" if ch in "%*" else "." if ch == "_" else re.escape(ch)
        for ch in pattern.replace(".*", "*")
    )
    compiled = re.compile(regex, re.I)
    return lambda name: compiled.fullmatch(name) is not None


# --------------------------------------------------------------------------- SASL PLAIN


class _AuthError(Exception):
    pass


class _SaslServerTransport(TTransportBase):
    """Server side of thrift_sasl's framing, PLAIN mechanism only, no QOP wrapping."""

    START, OK, BAD, ERROR, COMPLETE = 1, 2, 3, 4, 5
    _MAX_NEGOTIATION_FRAME = 64 * 1024

    def __init__(self, trans: TSocket) -> None:
        self._trans = trans
        self._rbuf = b""
        self._rpos = 0
        self._wbuf: list[bytes] = []
        self.user = ""

    def _recv_negotiation(self) -> tuple[int, bytes]:
        header = self._trans.readAll(5)
        status, length = struct.unpack(">BI", header)
        if status not in (self.START, self.OK, self.COMPLETE, self.BAD, self.ERROR):
            raise _AuthError(f"not a SASL negotiation frame (status byte {status})")
        if length > self._MAX_NEGOTIATION_FRAME:
            raise _AuthError("SASL negotiation frame too large")
        return status, self._trans.readAll(length) if length else b""

    def _send_negotiation(self, status: int, body: bytes) -> None:
        self._trans.write(struct.pack(">BI", status, len(body)) + body)
        self._trans.flush()

    def negotiate(self, users: Mapping[str, str]) -> str:
        status, payload = self._recv_negotiation()
        if status != self.START:
            raise _AuthError("expected SASL START")
        mechanism = payload.decode("utf-8", "replace")
        if mechanism.upper() != "PLAIN":
            self._send_negotiation(self.BAD, f"Unsupported mechanism type {mechanism}".encode())
            raise _AuthError(f"unsupported SASL mechanism {mechanism}")
        status, payload = self._recv_negotiation()
        if status not in (self.OK, self.COMPLETE):
            raise _AuthError(f"unexpected SASL status {status}")
        parts = payload.split(b"\0")
        if len(parts) != 3:
            self._send_negotiation(self.ERROR, b"Malformed PLAIN SASL response")
            raise _AuthError("malformed PLAIN response")
        user = parts[1].decode("utf-8", "replace")
        password = parts[2].decode("utf-8", "replace")
        if user not in users or users[user] != password:
            self._send_negotiation(self.ERROR, b"Error validating the login")
            raise _AuthError(f"bad credentials for user {user!r}")
        self._send_negotiation(self.COMPLETE, b"")
        self.user = user
        return user

    def isOpen(self) -> bool:  # noqa: N802 - thrift API
        return self._trans.isOpen()

    def open(self) -> None:
        pass

    def close(self) -> None:
        self._trans.close()

    def read(self, sz: int) -> bytes:
        if self._rpos >= len(self._rbuf):
            (length,) = struct.unpack(">I", self._trans.readAll(4))
            self._rbuf = self._trans.readAll(length) if length else b""
            self._rpos = 0
        chunk = self._rbuf[self._rpos:self._rpos + sz]
        self._rpos += len(chunk)
        return chunk

    def write(self, buf: bytes) -> None:
        self._wbuf.append(bytes(buf))

    def flush(self) -> None:
        data = b"".join(self._wbuf)
        self._wbuf = []
        self._trans.write(struct.pack(">I", len(data)) + data)
        self._trans.flush()


# --------------------------------------------------------------------------- handler


class _Connection:
    def __init__(self, conn_id: int, sock: socket.socket) -> None:
        self.id = conn_id
        self.sock = sock
        self.user = ""

    def drop(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class _Handler:
    """Implements ImpalaHiveServer2Service.Iface for one client connection."""

    def __init__(self, server: HS2Server, conn: _Connection) -> None:
        self._server = server
        self._conn = conn

    # -- helpers
    def _session(self, handle: cli.TSessionHandle | None) -> tuple[_Session | None, cli.TStatus]:
        guid = handle.sessionId.guid if handle is not None and handle.sessionId else b""
        session = self._server._get_session(guid)
        if session is None:
            return None, _error(f"Invalid session id: {guid.hex() if guid else '<none>'}")
        if session.expired:
            return None, _error(
                f"Client session expired (session {session.id} was expired by the test server)")
        return session, _ok()

    def _operation(
        self, handle: cli.TOperationHandle | None
    ) -> tuple[_Operation | None, cli.TStatus]:
        guid = handle.operationId.guid if handle is not None and handle.operationId else b""
        op = self._server._get_operation(guid)
        if op is None:
            return None, _error(f"Invalid or unknown query handle: {guid.hex() if guid else ''}")
        if op.session.expired:
            return None, _error(f"Client session expired (session {op.session.id})")
        return op, _ok()

    # -- sessions
    def OpenSession(self, req: cli.TOpenSessionReq) -> cli.TOpenSessionResp:  # noqa: N802
        user = self._conn.user or req.username or "anonymous"
        try:
            session = self._server._open_session(user, self._conn.id)
        except sqlite3.Error as exc:
            return cli.TOpenSessionResp(status=_error(f"Failed to open session: {exc}"))
        conf = dict(req.configuration or {})
        db = conf.get("use:database")
        if db:
            if db.lower() not in self._server._known_databases():
                return cli.TOpenSessionResp(status=_error(f"Database does not exist: {db}"))
            session.current_database = db
        return cli.TOpenSessionResp(
            status=_ok(),
            serverProtocolVersion=cli.TProtocolVersion.HIVE_CLI_SERVICE_PROTOCOL_V6,
            sessionHandle=cli.TSessionHandle(
                sessionId=cli.THandleIdentifier(guid=session.guid, secret=session.secret)),
            configuration={},
        )

    def CloseSession(self, req: cli.TCloseSessionReq) -> cli.TCloseSessionResp:  # noqa: N802
        guid = req.sessionHandle.sessionId.guid if req.sessionHandle else b""
        if not self._server._close_session(guid):
            return cli.TCloseSessionResp(status=_error(f"Invalid session id: {guid.hex()}"))
        return cli.TCloseSessionResp(status=_ok())

    def GetInfo(self, req: cli.TGetInfoReq) -> cli.TGetInfoResp:  # noqa: N802
        _session, status = self._session(req.sessionHandle)
        if _session is None:
            return cli.TGetInfoResp(status=status)
        value = "Impala" if req.infoType == cli.TGetInfoType.CLI_SERVER_NAME else "hs2_server"
        return cli.TGetInfoResp(status=_ok(), infoValue=cli.TGetInfoValue(stringValue=value))

    def PingImpalaHS2Service(self, req: Any) -> TPingImpalaHS2ServiceResp:  # noqa: N802
        session, status = self._session(req.sessionHandle)
        if session is None:
            return TPingImpalaHS2ServiceResp(status=status)
        return TPingImpalaHS2ServiceResp(
            status=_ok(), version=f"hs2_server (sqlite {sqlite3.sqlite_version})",
            webserver_address="", timestamp=int(time.time() * 1000))

    # -- statements
    def ExecuteStatement(  # noqa: N802
        self, req: cli.TExecuteStatementReq
    ) -> cli.TExecuteStatementResp:
        statement = req.statement or ""
        session, status = self._session(req.sessionHandle)
        if session is None:
            self._server._record("", statement, False, status.errorMessage, self._conn.id)
            return cli.TExecuteStatementResp(status=status)
        faults = self._server.faults
        drop, execute_first = faults._take_drop()
        if drop:
            if execute_first:
                self._server._execute(session, statement, self._conn.id)
            self._server._record(session.id, statement, False, "connection dropped (fault)",
                                 self._conn.id)
            self._server._count("connections_dropped")
            self._conn.drop()
            raise _DroppedConnection(message="connection dropped by fault injection")
        op, status = self._server._execute(session, statement, self._conn.id)
        if op is None:
            return cli.TExecuteStatementResp(status=status)
        return cli.TExecuteStatementResp(status=_ok(), operationHandle=op.handle())

    def GetOperationStatus(  # noqa: N802
        self, req: cli.TGetOperationStatusReq
    ) -> cli.TGetOperationStatusResp:
        op, status = self._operation(req.operationHandle)
        if op is None:
            return cli.TGetOperationStatusResp(status=status)
        if op.error is not None:
            return cli.TGetOperationStatusResp(
                status=_ok(), operationState=cli.TOperationState.ERROR_STATE,
                errorMessage=op.error, sqlState=_SQL_STATE, errorCode=0, hasResultSet=False)
        return cli.TGetOperationStatusResp(
            status=_ok(), operationState=cli.TOperationState.FINISHED_STATE,
            hasResultSet=op.has_result_set)

    def GetResultSetMetadata(  # noqa: N802
        self, req: cli.TGetResultSetMetadataReq
    ) -> cli.TGetResultSetMetadataResp:
        op, status = self._operation(req.operationHandle)
        if op is None:
            return cli.TGetResultSetMetadataResp(status=status)
        columns = [
            cli.TColumnDesc(
                columnName=name,
                typeDesc=cli.TTypeDesc(types=[cli.TTypeEntry(
                    primitiveEntry=cli.TPrimitiveTypeEntry(type=_TYPE_IDS[type_]))]),
                position=i + 1,
            )
            for i, (name, type_) in enumerate(zip(op.names, op.types, strict=True))
        ]
        return cli.TGetResultSetMetadataResp(
            status=_ok(), schema=cli.TTableSchema(columns=columns))

    def FetchResults(self, req: cli.TFetchResultsReq) -> cli.TFetchResultsResp:  # noqa: N802
        op, status = self._operation(req.operationHandle)
        if op is None:
            return cli.TFetchResultsResp(status=status)
        if req.fetchType == 1:  # log rows
            empty_log = cli.TColumn(stringVal=cli.TStringColumn(values=[], nulls=b""))
            return cli.TFetchResultsResp(
                status=_ok(), hasMoreRows=False,
                results=cli.TRowSet(startRowOffset=0, rows=[], columns=[empty_log]))
        if req.orientation == cli.TFetchOrientation.FETCH_FIRST:
            op.pos = 0
        max_rows = req.maxRows if req.maxRows and req.maxRows > 0 else 1024
        start = op.pos
        end = min(op.num_rows, start + max_rows)
        op.pos = end
        columns = [
            _tcolumn(type_, values[start:end])
            for type_, values in zip(op.types, op.columns, strict=True)
        ]
        return cli.TFetchResultsResp(
            status=_ok(), hasMoreRows=end < op.num_rows,
            results=cli.TRowSet(startRowOffset=start, rows=[], columns=columns))

    def GetLog(self, req: cli.TGetLogReq) -> cli.TGetLogResp:  # noqa: N802
        op, status = self._operation(req.operationHandle)
        if op is None:
            return cli.TGetLogResp(status=status)
        return cli.TGetLogResp(status=_ok(), log="")

    def CancelOperation(  # noqa: N802
        self, req: cli.TCancelOperationReq
    ) -> cli.TCancelOperationResp:
        op, status = self._operation(req.operationHandle)
        return cli.TCancelOperationResp(status=status if op is None else _ok())

    def CloseOperation(self, req: cli.TCloseOperationReq) -> cli.TCloseOperationResp:  # noqa: N802
        op = self._server._close_operation(req.operationHandle.operationId.guid)
        if op is None:
            return cli.TCloseOperationResp(status=_error("Invalid or unknown query handle"))
        return cli.TCloseOperationResp(status=_ok())

    def CloseImpalaOperation(self, req: Any) -> TCloseImpalaOperationResp:  # noqa: N802
        op = self._server._close_operation(req.operationHandle.operationId.guid)
        if op is None:
            return TCloseImpalaOperationResp(status=_error("Invalid or unknown query handle"))
        dml = None
        if op.kind == "dml" and op.error is None:
            dml = TDmlResult(rows_modified={"": op.rows_modified}, num_row_errors=0)
        return TCloseImpalaOperationResp(status=_ok(), dml_result=dml)

    def GetRuntimeProfile(self, req: Any) -> TGetRuntimeProfileResp:  # noqa: N802
        guid = req.operationHandle.operationId.guid if req.operationHandle else b""
        profile = self._server._profile(guid)
        if profile is None:
            return TGetRuntimeProfileResp(status=_error("Invalid or unknown query handle"))
        return TGetRuntimeProfileResp(status=_ok(), profile=profile)

    def GetExecSummary(self, req: Any) -> TGetExecSummaryResp:  # noqa: N802
        return TGetExecSummaryResp(status=_error("GetExecSummary is not supported by hs2_server"))

    # -- metadata
    def _rows_op(
        self, session: _Session, names: list[str], rows: list[tuple[str, ...]]
    ) -> _Operation:
        op = _Operation(session, "query")
        op.has_result_set = True
        op.names = names
        op.types = ["STRING"] * len(names)
        op.columns = [[r[i].encode() if r[i] is not None else None for r in rows]
                      for i in range(len(names))]
        op.num_rows = len(rows)
        self._server._add_operation(op)
        return op

    def GetSchemas(self, req: cli.TGetSchemasReq) -> cli.TGetSchemasResp:  # noqa: N802
        session, status = self._session(req.sessionHandle)
        if session is None:
            return cli.TGetSchemasResp(status=status)
        match = _name_matcher(req.schemaName)
        rows = [(d, "") for d in sorted(self._server._known_databases()) if match(d)]
        op = self._rows_op(session, ["TABLE_SCHEM", "TABLE_CATALOG"], rows)
        return cli.TGetSchemasResp(status=_ok(), operationHandle=op.handle())

    def GetTables(self, req: cli.TGetTablesReq) -> cli.TGetTablesResp:  # noqa: N802
        session, status = self._session(req.sessionHandle)
        if session is None:
            return cli.TGetTablesResp(status=status)
        db_match = _name_matcher(req.schemaName)
        table_match = _name_matcher(req.tableName)
        with session.lock:
            tables = [r[0].decode() if isinstance(r[0], bytes) else r[0]
                      for r in session.db.execute(
                          "SELECT name FROM sqlite_master WHERE type = 'table' "
                          "AND name NOT LIKE 'sqlite_%' AND name != '_hs2_databases' "
                          "ORDER BY name")]
        rows = [("", d, t, "TABLE", "") for d in sorted(self._server._known_databases())
                if db_match(d) for t in tables if table_match(t)]
        op = self._rows_op(
            session, ["TABLE_CAT", "TABLE_SCHEM", "TABLE_NAME", "TABLE_TYPE", "REMARKS"], rows)
        return cli.TGetTablesResp(status=_ok(), operationHandle=op.handle())

    def _unsupported(self, name: str) -> cli.TStatus:
        return _error(f"{name} is not supported by hs2_server")

    def GetTypeInfo(self, req: Any) -> cli.TGetTypeInfoResp:  # noqa: N802
        return cli.TGetTypeInfoResp(status=self._unsupported("GetTypeInfo"))

    def GetCatalogs(self, req: Any) -> cli.TGetCatalogsResp:  # noqa: N802
        return cli.TGetCatalogsResp(status=self._unsupported("GetCatalogs"))

    def GetTableTypes(self, req: Any) -> cli.TGetTableTypesResp:  # noqa: N802
        return cli.TGetTableTypesResp(status=self._unsupported("GetTableTypes"))

    def GetColumns(self, req: Any) -> cli.TGetColumnsResp:  # noqa: N802
        return cli.TGetColumnsResp(status=self._unsupported("GetColumns"))

    def GetFunctions(self, req: Any) -> cli.TGetFunctionsResp:  # noqa: N802
        return cli.TGetFunctionsResp(status=self._unsupported("GetFunctions"))

    def GetDelegationToken(self, req: Any) -> cli.TGetDelegationTokenResp:  # noqa: N802
        return cli.TGetDelegationTokenResp(status=self._unsupported("GetDelegationToken"))

    def CancelDelegationToken(self, req: Any) -> cli.TCancelDelegationTokenResp:  # noqa: N802
        return cli.TCancelDelegationTokenResp(status=self._unsupported("CancelDelegationToken"))

    def RenewDelegationToken(self, req: Any) -> cli.TRenewDelegationTokenResp:  # noqa: N802
        return cli.TRenewDelegationTokenResp(status=self._unsupported("RenewDelegationToken"))


# --------------------------------------------------------------------------- server


class HS2Server:
    """Loopback HiveServer2 server over a SQLite file; see the comment block at the top.

    ``users`` None means NOSASL; a mapping means SASL PLAIN with those user -> password pairs.
    Fault injection: ``server.faults`` (a :class:`Faults`) or the same-named shortcut methods,
    plus :meth:`expire_sessions` / :meth:`expire_session`.
    """

    def __init__(
        self,
        database_path: str | os.PathLike[str],
        host: str = "127.0.0.1",
        port: int = 0,
        latency_ms: float = 0,
        users: Mapping[str, str] | None = None,
        max_statement_bytes: int = DEFAULT_MAX_STATEMENT_BYTES,
        busy_timeout_ms: int = 30_000,
        databases: Iterable[str] = (),
    ) -> None:
        self.database_path = os.fspath(database_path)
        self.host = host
        self._requested_port = port
        self.port = 0
        self.users = dict(users) if users is not None else None
        self.max_statement_bytes = max_statement_bytes
        self.busy_timeout_ms = busy_timeout_ms
        self.faults = Faults()
        self.faults.set_latency_ms(latency_ms)
        self._initial_databases = [d for d in databases]
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._stopping = threading.Event()
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._connections: dict[int, tuple[_Connection, threading.Thread]] = {}
        self._next_conn_id = 1
        self._sessions: dict[bytes, _Session] = {}
        self._operations: dict[bytes, _Operation] = {}
        self._closed_profiles: collections.OrderedDict[bytes, str] = collections.OrderedDict()
        self._databases: set[str] = {"default"}
        self._statements: list[StatementRecord] = []
        self._stats: collections.Counter[str] = collections.Counter()

    # -- lifecycle
    def start(self) -> HS2Server:
        """Prepare the SQLite file, listen, serve in background threads; returns self."""
        setup = sqlite3.connect(self.database_path, isolation_level=None)
        try:
            setup.execute("PRAGMA journal_mode=WAL")
            setup.execute("CREATE TABLE IF NOT EXISTS _hs2_databases (name TEXT PRIMARY KEY)")
            for name in self._initial_databases:
                setup.execute("INSERT OR IGNORE INTO _hs2_databases VALUES (?)", (name.lower(),))
            rows = setup.execute("SELECT name FROM _hs2_databases").fetchall()
        finally:
            setup.close()
        self._databases = {"default"} | {r[0] for r in rows}
        listener = socket.create_server((self.host, self._requested_port), reuse_port=False)
        listener.settimeout(0.2)
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._stopping.clear()
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name=f"hs2-accept-{self.port}", daemon=True)
        self._accept_thread.start()
        _LOGGER.info("HS2 server listening on %s:%s (db %s, auth %s)", self.host, self.port,
                     self.database_path, "PLAIN" if self.users is not None else "NOSASL")
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, drop every connection, close every session."""
        self._stopping.set()
        if self._listener is not None:
            self._listener.close()
        if self._accept_thread is not None:
            self._accept_thread.join(timeout)
        with self._lock:
            conns = list(self._connections.values())
        for conn, _thread in conns:
            conn.drop()
        for _conn, thread in conns:
            thread.join(timeout)
        with self._lock:
            sessions = list(self._sessions.values())
            self._sessions.clear()
            self._operations.clear()
        for session in sessions:
            with session.lock:
                session.db.close()
        self._listener = None
        self._accept_thread = None

    def __enter__(self) -> HS2Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- public test API
    @property
    def statements(self) -> list[StatementRecord]:
        """A snapshot of every statement received, in arrival order."""
        with self._lock:
            return list(self._statements)

    def clear_statements(self) -> None:
        with self._lock:
            self._statements.clear()

    @property
    def stats(self) -> dict[str, int]:
        """Counters: connections_accepted/refused/dropped, sessions_opened/closed,
        statements_delayed, statements_failed_by_fault, statements_expired_session."""
        with self._lock:
            return dict(self._stats)

    @property
    def session_ids(self) -> list[str]:
        """Ids (hex guid) of open sessions."""
        with self._lock:
            return [s.id for s in self._sessions.values()]

    @property
    def connection_count(self) -> int:
        """Connections currently being served."""
        with self._lock:
            return len(self._connections)

    def refuse_connections(self, n: int | None = None) -> None:
        self.faults.refuse_connections(n)

    def drop_after_statements(self, n: int, execute: bool = False) -> None:
        self.faults.drop_after_statements(n, execute)

    def fail_statements(
        self, pattern: str | re.Pattern[str], times: int | None = None,
        message: str | None = None, phase: str = "execute",
    ) -> None:
        self.faults.fail_statements(pattern, times, message, phase)

    def set_latency_ms(self, ms: float) -> None:
        self.faults.set_latency_ms(ms)

    def clear_faults(self) -> None:
        self.faults.clear()

    def expire_sessions(self) -> int:
        """Expire every open session; returns how many."""
        with self._lock:
            for session in self._sessions.values():
                session.expired = True
            return len(self._sessions)

    def expire_session(self, session_id: str) -> bool:
        with self._lock:
            for session in self._sessions.values():
                if session.id == session_id:
                    session.expired = True
                    return True
        return False

    # -- internals
    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._stats[key] += n

    def _record(
        self, session_id: str, statement: str, success: bool, error: str | None, conn_id: int
    ) -> None:
        rec = StatementRecord(session_id, statement, success, error, time.time(), conn_id)
        with self._lock:
            self._statements.append(rec)

    def _known_databases(self) -> set[str]:
        with self._lock:
            return set(self._databases)

    def _accept_loop(self) -> None:
        listener = self._listener
        assert listener is not None
        while not self._stopping.is_set():
            try:
                sock, _addr = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stopping.is_set():
                    break
                _LOGGER.exception("accept failed")
                continue
            sock.settimeout(None)
            with self._lock:
                conn_id = self._next_conn_id
                self._next_conn_id += 1
                self._stats["connections_accepted"] += 1
            if self.faults._take_refusal():
                self._count("connections_refused")
                sock.close()
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Connection(conn_id, sock)
            thread = threading.Thread(
                target=self._serve, args=(conn,), name=f"hs2-conn-{conn_id}", daemon=True)
            with self._lock:
                self._connections[conn_id] = (conn, thread)
            thread.start()

    def _serve(self, conn: _Connection) -> None:
        tsock = TSocket()
        tsock.setHandle(conn.sock)
        try:
            base: TTransportBase = tsock
            if self.users is not None:
                sasl = _SaslServerTransport(tsock)
                conn.user = sasl.negotiate(self.users)
                base = sasl
            trans = TBufferedTransport(base)
            # thrift 0.25 caps strings at 16384000 bytes by default; lift the cap so an
            # over-long statement is read and rejected with an error status instead.
            prot = TBinaryProtocolAccelerated(trans, string_length_limit=None)
            processor = ImpalaHiveServer2Service.Processor(_Handler(self, conn))
            while not self._stopping.is_set():
                processor.process(prot, prot)
        except _AuthError as exc:
            _LOGGER.info("connection %s rejected: %s", conn.id, exc)
            self._count("connections_auth_failed")
        except (TTransportException, EOFError, OSError) as exc:
            _LOGGER.debug("connection %s closed: %s", conn.id, exc)
        except Exception:
            _LOGGER.exception("connection %s failed", conn.id)
        finally:
            try:
                conn.sock.close()
            except OSError:
                pass
            with self._lock:
                self._connections.pop(conn.id, None)

    def _open_session(self, user: str, conn_id: int) -> _Session:
        db = sqlite3.connect(
            self.database_path, timeout=self.busy_timeout_ms / 1000.0, isolation_level=None,
            check_same_thread=False)
        db.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
        db.text_factory = bytes
        session = _Session(user, db, conn_id)
        with self._lock:
            self._sessions[session.guid] = session
            self._stats["sessions_opened"] += 1
        return session

    def _close_session(self, guid: bytes) -> bool:
        with self._lock:
            session = self._sessions.pop(guid, None)
            if session is None:
                return False
            self._stats["sessions_closed"] += 1
            for key in [k for k, op in self._operations.items() if op.session is session]:
                del self._operations[key]
        with session.lock:
            session.db.close()
        return True

    def _get_session(self, guid: bytes) -> _Session | None:
        with self._lock:
            return self._sessions.get(guid)

    def _get_operation(self, guid: bytes) -> _Operation | None:
        with self._lock:
            return self._operations.get(guid)

    def _add_operation(self, op: _Operation) -> None:
        with self._lock:
            self._operations[op.guid] = op

    def _close_operation(self, guid: bytes) -> _Operation | None:
        with self._lock:
            op = self._operations.pop(guid, None)
            if op is not None:
                self._closed_profiles[guid] = op.profile()
                while len(self._closed_profiles) > _CLOSED_PROFILES_KEPT:
                    self._closed_profiles.popitem(last=False)
            return op

    def _profile(self, guid: bytes) -> str | None:
        with self._lock:
            op = self._operations.get(guid)
            if op is not None:
                return op.profile()
            return self._closed_profiles.get(guid)

    def _execute(
        self, session: _Session, statement: str, conn_id: int
    ) -> tuple[_Operation | None, cli.TStatus]:
        """Run one statement; returns (operation, ok) or (None, error status)."""
        latency = self.faults.latency_ms
        if latency > 0:
            self._count("statements_delayed")
            time.sleep(latency / 1000.0)
        error: str | None = None
        op: _Operation | None = None
        size = len(statement.encode("utf-8", "surrogatepass"))
        rule = None
        if size > self.max_statement_bytes:
            error = (f"AnalysisException: Statement length of {size} bytes exceeds the maximum "
                     f"statement length ({self.max_statement_bytes} bytes)")
        else:
            rule = self.faults._take_failure(statement)
        if error is not None:
            pass
        elif rule is not None:
            self._count("statements_failed_by_fault")
            if rule.phase == "execute":
                error = rule.message
            else:
                op = _Operation(session, "dml")
                op.error = rule.message
        else:
            try:
                op = self._run(session, statement)
            except AnalysisError as exc:
                error = f"AnalysisException: {exc}"
            except sqlite3.Error as exc:
                error = _sqlite_error_message(exc)
        if op is not None:
            self._add_operation(op)
        failed = error if error is not None else (op.error if op is not None else None)
        self._record(session.id, statement, failed is None, failed, conn_id)
        if error is not None:
            return None, _error(error)
        return op, _ok()

    def _run(self, session: _Session, statement: str) -> _Operation:
        tr = translate(statement, self._known_databases())
        op = _Operation(session, tr.kind)
        if tr.kind == "use":
            if tr.name.lower() not in self._known_databases():
                raise AnalysisError(f"Database does not exist: {tr.name}")
            session.current_database = tr.name
            return op
        if tr.kind in ("create_db", "drop_db"):
            self._database_ddl(session, tr)
            return op
        with session.lock:
            if tr.kind == "query":
                cur = session.db.execute(tr.sql, tr.params)
                rows = cur.fetchall()
                names = [d[0] for d in cur.description or ()]
                declared = self._declared_types(session, tr.tables)
                op.has_result_set = True
                op.names = names
                op.columns = [[row[i] for row in rows] for i in range(len(names))]
                op.types = [
                    _column_type(values, declared.get(name.lower()))
                    for name, values in zip(names, op.columns, strict=True)
                ]
                op.num_rows = len(rows)
            else:
                with self._write_lock:
                    cur = session.db.execute(tr.sql, tr.params)
                    op.rows_modified = max(cur.rowcount, 0) if tr.kind == "dml" else 0
        return op

    def _database_ddl(self, session: _Session, tr: Translated) -> None:
        name = tr.name.lower()
        with self._write_lock, session.lock:
            known = self._known_databases()
            if tr.kind == "create_db":
                if name in known:
                    if not tr.if_clause:
                        raise AnalysisError(f"Database already exists: {tr.name}")
                    return
                session.db.execute("INSERT OR IGNORE INTO _hs2_databases VALUES (?)", (name,))
                with self._lock:
                    self._databases.add(name)
                return
            if name == "default":
                raise AnalysisError("Cannot drop default database.")
            if name not in known:
                if not tr.if_clause:
                    raise AnalysisError(f"Database does not exist: {tr.name}")
                return
            session.db.execute("DELETE FROM _hs2_databases WHERE name = ?", (name,))
            with self._lock:
                self._databases.discard(name)

    @staticmethod
    def _declared_types(session: _Session, names: tuple[str, ...]) -> dict[str, str]:
        if not names:
            return {}
        wanted = {n.lower() for n in names}
        tables = [
            (r[0].decode() if isinstance(r[0], bytes) else r[0])
            for r in session.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        ]
        found: dict[str, set[str]] = {}
        for table in tables:
            if table.lower() not in wanted:
                continue
            for row in session.db.execute(f"PRAGMA table_info({_quote_ident(table)})"):
                col = (row[1].decode() if isinstance(row[1], bytes) else row[1]).lower()
                decl = row[2].decode() if isinstance(row[2], bytes) else row[2]
                impala_type = _impala_type_of_decl(decl or "")
                if impala_type is not None:
                    found.setdefault(col, set()).add(impala_type)
        return {col: next(iter(types)) for col, types in found.items() if len(types) == 1}


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--database", required=True, help="SQLite file holding the tables")
    parser.add_argument("--latency_ms", type=float, default=0)
    parser.add_argument("--user", help="enables SASL PLAIN with this user")
    parser.add_argument("--password_file", help="file holding --user's password")
    parser.add_argument("--max_statement_bytes", type=int, default=DEFAULT_MAX_STATEMENT_BYTES)
    parser.add_argument("--refuse_connections", type=int, default=0,
                        help="close the first N accepted connections at once")
    parser.add_argument("--drop_after_statements", type=int, default=None,
                        help="drop the connection of statement N+1")
    parser.add_argument("--fail_pattern", action="append", default=[],
                        help="regex; matching statements fail (repeatable)")
    parser.add_argument("--log_level", default="WARNING")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    users = None
    if args.user:
        password = ""
        if args.password_file:
            with open(args.password_file, encoding="utf-8") as fh:
                password = fh.read().rstrip("\r\n")
        users = {args.user: password}
    server = HS2Server(args.database, host=args.host, port=args.port,
                       latency_ms=args.latency_ms, users=users,
                       max_statement_bytes=args.max_statement_bytes)
    if args.refuse_connections:
        server.refuse_connections(args.refuse_connections)
    if args.drop_after_statements is not None:
        server.drop_after_statements(args.drop_after_statements)
    for pattern in args.fail_pattern:
        server.fail_statements(pattern)
    stop = threading.Event()

    def _on_signal(signum: int, _frame: object) -> None:
        _LOGGER.info("signal %s received, stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    server.start()
    print(f"listening on {args.host}:{server.port}", flush=True)
    try:
        while not stop.wait(0.2):
            pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
