"""The DDL files under sql/ are exactly what the one schema description generates."""

from pathlib import Path

import pytest

from transforms.warehouse import TABLES, impala_ddl, sqlite_ddl

ROOT = Path(__file__).resolve().parents[2]
HEADER = '-- Generated from transforms/warehouse.py (TABLES); tests keep it in step.\n'


@pytest.mark.parametrize('table', TABLES, ids=lambda t: t.name)
@pytest.mark.parametrize('dialect, render', [('impala', impala_ddl), ('sqlite', sqlite_ddl)])
def test_sql_file_matches_schema(table, dialect, render):
    path = ROOT / 'sql' / dialect / f'{table.name}.sql'
    assert path.read_text(encoding='utf-8') == HEADER + render(table) + ';\n', (
        f'{path} drifted from transforms/warehouse.py; regenerate it')
