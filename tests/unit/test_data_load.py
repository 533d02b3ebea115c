"""read_sft: good files in every format, and each kind of bad input with its exact location."""

from __future__ import annotations

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ilp_ray.data import read_sft
from ilp_ray.errors import DataError
from ilp_ray.records import SftRecord


def _jsonl(tmp_path, lines, name="d.jsonl") -> str:
    p = tmp_path / name
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(p)


def _row(**kw) -> str:
    base = {"id": "a", "prompt": "Q?", "response": "A."}
    base.update(kw)
    return json.dumps({k: v for k, v in base.items() if v is not ...})


def _err(path) -> DataError:
    with pytest.raises(DataError) as ei:
        read_sft(path)
    return ei.value


# --- good cases ----------------------------------------------------------------------------------

def test_jsonl_good_with_optional_fields_blank_lines_and_int_id(tmp_path):
    p = _jsonl(tmp_path, [
        _row(id=7, extra="ignored"),
        "",
        _row(id="b", subset="med", position=10, options=["x", "A."], answer=1),
        "   ",
        _row(id="c"),
    ])
    recs = read_sft(p)
    assert recs == [
        SftRecord(id="7", prompt="Q?", response="A.", subset="default", position=0),
        SftRecord(id="b", prompt="Q?", response="A.", subset="med", position=10, options=("x", "A."), answer=1),
        SftRecord(id="c", prompt="Q?", response="A.", subset="default", position=2),
    ]


def test_file_uri_and_gzip(tmp_path):
    p = tmp_path / "d.jsonl.gz"
    with gzip.open(p, "wt", encoding="utf-8") as f:
        f.write(_row(id="a") + "\n" + _row(id="b") + "\n")
    recs = read_sft(p.as_uri())
    assert [r.id for r in recs] == ["a", "b"]
    assert p.as_uri().startswith("file://")


def test_csv_good(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text(
        "id,prompt,response,subset,position,options,answer\n"
        '1,"multi\nline prompt",A.,,,,\n'
        '2,Q?,"B, quoted",law,5,"[""x"", ""B, quoted""]",1\n',
        encoding="utf-8",
    )
    recs = read_sft(p)
    assert recs == [
        SftRecord(id="1", prompt="multi\nline prompt", response="A.", position=0),
        SftRecord(id="2", prompt="Q?", response="B, quoted", subset="law", position=5,
                  options=("x", "B, quoted"), answer=1),
    ]


def test_parquet_good_and_file_uri(tmp_path):
    p = tmp_path / "d.parquet"
    pq.write_table(pa.table({
        "id": pa.array([1, 2], pa.int64()),
        "prompt": ["Q1", "Q2"],
        "response": ["A1", "A2"],
        "subset": ["s", None],
        "position": pa.array([None, 9], pa.int64()),
        "options": pa.array([None, ["A2", "z"]], pa.list_(pa.string())),
        "answer": pa.array([None, 0], pa.int64()),
        "meta": ["ignored", "too"],
    }), p)
    expected = [
        SftRecord(id="1", prompt="Q1", response="A1", subset="s", position=0),
        SftRecord(id="2", prompt="Q2", response="A2", position=9, options=("A2", "z"), answer=0),
    ]
    assert read_sft(p) == expected
    assert read_sft(p.as_uri()) == expected


# --- bad JSONL -----------------------------------------------------------------------------------

def test_jsonl_bad_json_names_line(tmp_path):
    p = _jsonl(tmp_path, [_row(id="a"), "", '{"id": "b", "prompt": '])
    e = _err(p)
    assert (e.file, e.line, e.field) == (p, 3, None)
    assert str(e).startswith(f"{p}:3: invalid JSON")


def test_jsonl_non_object_line(tmp_path):
    p = _jsonl(tmp_path, [_row(id="a"), "[1, 2]"])
    assert str(_err(p)) == f"{p}:2: expected a JSON object, got list"


def test_jsonl_missing_field(tmp_path):
    p = _jsonl(tmp_path, [_row(id="a"), _row(id="b", response=...)])
    assert str(_err(p)) == f"{p}:2: field 'response': missing required field"


def test_jsonl_duplicate_id_names_both_lines(tmp_path):
    p = _jsonl(tmp_path, [_row(id="a"), _row(id="b"), "", _row(id="a")])
    assert str(_err(p)) == f"{p}:4: field 'id': duplicate id 'a', first on line 1"


def test_jsonl_int_and_str_ids_collide(tmp_path):
    p = _jsonl(tmp_path, [_row(id=1), _row(id="1")])
    assert str(_err(p)) == f"{p}:2: field 'id': duplicate id '1', first on line 1"


def test_jsonl_empty_response(tmp_path):
    p = _jsonl(tmp_path, [_row(id="a", response="  \n ")])
    assert str(_err(p)) == f"{p}:1: field 'response': must not be empty"


@pytest.mark.parametrize("kw, field, msg", [
    ({"prompt": 3}, "prompt", "expected a string, got integer"),
    ({"position": "3"}, "position", "expected an integer, got string"),
    ({"position": -1}, "position", "must be >= 0, got -1"),
    ({"options": "A.", "answer": 0}, "options", "expected a list of strings, got string"),
    ({"options": ["A.", 2], "answer": 0}, "options", "option 1: expected a string, got integer"),
    ({"options": ["A.", "b"]}, "answer", "'options' and 'answer' must be given together"),
    ({"options": ["A.", "b"], "answer": 2}, "answer", "index 2 out of range for 2 options"),
    ({"options": ["A.", "b"], "answer": 1}, "options", "options[1] (the answer) differs from the response"),
    ({"id": 1.0}, "id", "expected a string or integer, got float"),
    ({"id": True}, "id", "expected a string or integer, got boolean"),
    ({"id": None}, "id", "must not be null"),
    ({"subset": 5}, "subset", "expected a string, got integer"),
])
def test_jsonl_wrong_types(tmp_path, kw, field, msg):
    p = _jsonl(tmp_path, [_row(id="ok"), _row(**{"id": "b", **kw})])
    assert str(_err(p)) == f"{p}:2: field '{field}': {msg}"


def test_jsonl_empty_file(tmp_path):
    p = tmp_path / "e.jsonl"
    p.write_text("\n\n", encoding="utf-8")
    assert str(_err(str(p))) == f"{p}: no records in file"


def test_jsonl_invalid_utf8_names_line_and_offset(tmp_path):
    p = tmp_path / "u.jsonl"
    first = (_row(id="a") + "\n").encode()
    p.write_bytes(first + b'{"id": "b", "prompt": "\xff", "response": "x"}\n')
    e = _err(str(p))
    assert e.line == 2
    assert f"byte offset {len(first) + 23}" in str(e)


def test_errors_are_counted(tmp_path):
    p = _jsonl(tmp_path, ["{bad", _row(id="b", prompt=""), _row(id="c", response=1)])
    assert str(_err(p)).endswith("(and 2 more errors)")
    assert _err(p).line == 1


def test_missing_file_and_unknown_extension(tmp_path):
    assert "file not found" in str(_err(str(tmp_path / "nope.jsonl")))
    (tmp_path / "d.txt").write_text("x")
    assert "unsupported file type" in str(_err(str(tmp_path / "d.txt")))


# --- bad CSV -------------------------------------------------------------------------------------

def _csv(tmp_path, text) -> str:
    p = tmp_path / "d.csv"
    p.write_text(text, encoding="utf-8")
    return str(p)


def test_csv_missing_column(tmp_path):
    p = _csv(tmp_path, "id,prompt\n1,Q\n")
    assert str(_err(p)) == f"{p}:1: field 'response': missing column in the header (found: id, prompt)"


def test_csv_line_numbers_are_physical(tmp_path):
    # The first record spans lines 2-3, so the bad record starts on line 4.
    p = _csv(tmp_path, 'id,prompt,response\n1,"two\nlines",A\n2,Q,"   "\n')
    assert str(_err(p)) == f"{p}:4: field 'response': must not be empty"


def test_csv_duplicate_id_and_bad_position(tmp_path):
    p = _csv(tmp_path, "id,prompt,response,position\n1,Q,A,0\n1,Q,B,1\n")
    assert str(_err(p)) == f"{p}:3: field 'id': duplicate id '1', first on line 2"
    p = _csv(tmp_path, "id,prompt,response,position\n1,Q,A,zero\n")
    assert str(_err(p)) == f"{p}:2: field 'position': expected an integer, got 'zero'"


def test_csv_wrong_cell_count_and_empty(tmp_path):
    p = _csv(tmp_path, "id,prompt,response\n1,Q,A,extra\n")
    assert str(_err(p)) == f"{p}:2: expected 3 cells as in the header, got 4"
    p = _csv(tmp_path, "")
    assert str(_err(p)) == f"{p}:1: empty file: no header line"
    p = _csv(tmp_path, "id,prompt,response\n")
    assert str(_err(p)) == f"{p}: no records in file"


def test_csv_invalid_utf8(tmp_path):
    p = tmp_path / "d.csv"
    p.write_bytes(b"id,prompt,response\n1,Q,A\n2,Q,\xc3\x28\n")
    e = _err(str(p))
    assert (e.line, e.field) == (3, None)
    assert "invalid UTF-8 at byte offset 29" in str(e)  # 19 + 6 + 4 bytes before it


# --- bad Parquet ---------------------------------------------------------------------------------

def _pq(tmp_path, cols) -> str:
    p = tmp_path / "d.parquet"
    pq.write_table(pa.table(cols), p)
    return str(p)


def test_parquet_missing_column(tmp_path):
    p = _pq(tmp_path, {"id": ["a"], "prompt": ["Q"]})
    assert str(_err(p)) == f"{p}: field 'response': missing column (found: id, prompt)"


def test_parquet_row_numbers_and_types(tmp_path):
    p = _pq(tmp_path, {"id": ["a", "b", "c"], "prompt": ["Q", "Q", "Q"], "response": ["A", None, "C"]})
    assert str(_err(p)) == f"{p}:2: field 'response': must not be null (row 2)"
    p = _pq(tmp_path, {"id": [1.0, 2.0], "prompt": ["Q", "Q"], "response": ["A", "B"]})
    assert str(_err(p)) == f"{p}:1: field 'id': expected a string or integer, got float (row 1) (and 1 more errors)"
    p = _pq(tmp_path, {"id": ["a", "a"], "prompt": ["Q", "Q"], "response": ["A", "B"]})
    assert str(_err(p)) == f"{p}:2: field 'id': duplicate id 'a', first on row 1 (row 2)"
    p = _pq(tmp_path, {"id": ["a"], "prompt": ["Q"], "response": [""]})
    assert str(_err(p)) == f"{p}:1: field 'response': must not be empty (row 1)"


# --- bounded loading (issue 20, finding 7): every hostile file is a DataError with its place ---

@pytest.mark.parametrize("line, message", [
    ('{"id": "a", "prompt": "Q?", "response": "A.", "prompt": "other"}', "duplicate key 'prompt'"),
    ('{"id": "a", "prompt": "Q?", "response": "A.", "x": ' + "[" * 100_000 + "]" * 100_000 + "}",
     "nesting deeper than 64 levels"),
    ('{"id": "a", "prompt": "Q?", "response": "A.", "position": ' + "9" * 5000 + "}", "invalid JSON"),
])
def test_hostile_json_lines_are_located_errors(tmp_path, line, message):
    e = _err(_jsonl(tmp_path, [_row(), line]))
    assert e.line == 2 and message in e.message


def test_a_line_past_the_cap_and_a_decompression_bomb_are_refused(tmp_path, monkeypatch):
    from ilp_ray.data import sources

    monkeypatch.setattr(sources, "MAX_LINE_BYTES", 1000)
    e = _err(_jsonl(tmp_path, [_row(), _row(id="b", response="x" * 2000)]))
    assert e.line == 2 and "limit max_line_bytes=1000 exceeded" in e.message
    monkeypatch.setattr(sources, "MAX_INPUT_BYTES", 100_000)
    bomb = tmp_path / "bomb.jsonl.gz"
    with gzip.open(bomb, "wb") as f:  # 2 MB of rows in a few kB
        for i in range(20_000):
            f.write((_row(id=f"r{i}") + "\n").encode())
    assert bomb.stat().st_size < 100_000
    e = _err(str(bomb))
    assert "limit max_input_bytes=100000 exceeded" in e.message and e.file == str(bomb)
    csv_bomb = tmp_path / "bomb.csv.gz"
    with gzip.open(csv_bomb, "wt") as f:
        f.write("id,prompt,response\n" + "".join(f"r{i},Q?,A.\n" for i in range(20_000)))
    assert "limit max_input_bytes=100000 exceeded" in _err(str(csv_bomb)).message


def test_a_million_bad_lines_keep_one_error_and_a_count(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(_row() + "\n" + "not json\n" * 100_000)
    e = _err(str(path))
    assert e.line == 2 and "(and 99999 more errors)" in e.message


def test_parquet_reads_only_the_columns_it_needs(tmp_path, monkeypatch):
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"id": ["a"], "prompt": ["Q?"], "response": ["A."], "blob": [b"x" * 1000]}), path)
    seen = []
    real = pq.ParquetFile.iter_batches

    def spy(self, *a, **k):
        seen.append(k.get("columns"))
        return real(self, *a, **k)

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", spy)
    assert [r.id for r in read_sft(str(path))] == ["a"]
    assert seen == [["id", "prompt", "response"]]
