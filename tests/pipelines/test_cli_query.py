"""`journeys query` prints or writes every row as a table, CSV, JSON lines or Parquet."""

from __future__ import annotations

import csv
import io
import json

import duckdb
import pyarrow.parquet as pq
import pytest

from pipelines.cli import main

SQL = "select * from t order by n"


@pytest.fixture
def warehouse(tmp_path):
    path = tmp_path / "w.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute(
            "create table t as select range::bigint as n, 'row ' || range as label, date '2026-11-01' + range::int"
            " as day, (range / 4)::decimal(18, 2) as revenue from range(25000)"
        )
        con.execute("update t set label = null where n = 1")
    return str(path)


def test_csv_to_stdout_has_every_row(warehouse, capsys):
    assert main(["query", SQL, "--warehouse", warehouse, "--format", "csv"]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[0] == ["n", "label", "day", "revenue"]
    assert len(rows) == 25_001  # beyond one fetch batch and far beyond --max-rows
    assert rows[1] == ["0", "row 0", "2026-11-01", "0.00"] and rows[2][1] == ""


def test_json_lines_keep_numbers_and_nulls(warehouse, capsys):
    assert main(["query", SQL + " limit 3", "--warehouse", warehouse, "--format", "json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows[1] == {"n": 1, "label": None, "day": "2026-11-02", "revenue": "0.25"}


def test_parquet_and_csv_to_a_file(warehouse, tmp_path):
    out = tmp_path / "t.parquet"
    assert main(["query", SQL, "--warehouse", warehouse, "--format", "parquet", "--out", str(out)]) == 0
    table = pq.read_table(out)
    assert table.num_rows == 25_000 and str(table.schema.field("n").type) == "int64"
    assert main(["query", SQL, "--warehouse", warehouse, "--format", "parquet"]) == 2
    out_csv = tmp_path / "t.csv"
    assert main(["query", SQL, "--warehouse", warehouse, "--format", "csv", "--out", str(out_csv)]) == 0
    assert out_csv.read_text().splitlines()[0] == "n,label,day,revenue"
