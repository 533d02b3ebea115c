"""read_mc_items (ilp score --items): every bad case names the file, line and field."""

import json

import pytest

from ilp_ray.data.items import read_mc_items
from ilp_ray.errors import DataError

GOOD = {"id": "a", "question": "q?", "options": ["x", "y"], "answer": 1}


def write(tmp_path, lines: list[bytes]):
    p = tmp_path / "items.jsonl"
    p.write_bytes(b"\n".join(lines) + b"\n")
    return p


def row(**kw):
    return json.dumps({**GOOD, **kw}).encode()


@pytest.mark.parametrize("second, field, message", [
    (b'{"id": "b", "question": ', None, "invalid JSON"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "options"} | {"id": "b"}).encode(), "options", "missing required field"),
    (row(), "id", "duplicate id 'a', first on line 1"),
    (row(id="b", question="  "), "question", "non-empty string"),
    (row(id="b", options="x"), "options", "list of at least two strings"),
    (row(id="b", options=["x", 3]), "options", "option 1 must be a non-empty string"),
    (row(id="b", answer="1"), "answer", "expected an integer"),
    (row(id="b", answer=True), "answer", "expected an integer"),
    (row(id=1.5), "id", "non-empty string or an integer"),
    (b'{"id": "b", "question": "caf\xe9", "options": ["x", "y"], "answer": 0}', None, "invalid UTF-8"),
    (b"[1, 2]", None, "expected a JSON object"),
])
def test_bad_rows(tmp_path, second, field, message):
    p = write(tmp_path, [row(), second])
    with pytest.raises(DataError) as e:
        read_mc_items(p)
    prefix = f"{p}:2: " + (f"field '{field}': " if field else "")
    assert str(e.value).startswith(prefix), str(e.value)
    assert message in str(e.value)


def test_empty_file(tmp_path):
    p = tmp_path / "items.jsonl"
    p.write_text("\n\n")
    with pytest.raises(DataError, match="no items in file"):
        read_mc_items(p)


def test_good_file_and_error_count(tmp_path):
    p = write(tmp_path, [row(), row(id=2, answer=0)])
    items = read_mc_items(p)
    assert [i.id for i in items] == ["a", "2"] and items[1].options == ("x", "y")
    p = write(tmp_path, [row(), row(answer=5), row(id="c", answer=-1)])
    with pytest.raises(DataError, match=r":2: field 'answer': index 5 is out of range.*\(and 1 more errors\)"):
        read_mc_items(p)
