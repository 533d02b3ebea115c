"""Fuzzing the user-facing inputs with hypothesis (issue 20): whatever bytes a data file or a
config holds, the loaders raise only ``DataError`` / ``ConfigError`` (with the file), never another
exception. The numbers of cases run are in docs/reliability.md."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ilp_ray.data import read_sft
from ilp_ray.errors import ConfigError, DataError

CASES = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FIELDS = ["id", "prompt", "response", "subset", "position", "options", "answer", "messages", "completion",
          "instruction", "input", "output", "conversations", "from", "value", "role", "content", "text"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=5),
                                                                inner, max_size=5),
    max_leaves=20)
rows = st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=6)


def _load(name: str, data: bytes):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / name
        path.write_bytes(data)
        try:
            return read_sft(str(path))
        except DataError as e:
            assert e.file is not None and str(path) in str(e)  # every error names the file
            return None


@CASES
@given(st.binary(max_size=2000))
def test_any_bytes_as_jsonl_or_csv(data):
    _load("d.jsonl", data)
    _load("d.csv", data)


@CASES
@given(st.lists(rows, min_size=1, max_size=5))
def test_any_json_rows(rs):
    got = _load("d.jsonl", "".join(json.dumps(r) + "\n" for r in rs).encode())
    if got is not None:
        assert all(r.prompt is not None and r.response is not None for r in got)


@CASES
@given(st.lists(st.text(max_size=30), max_size=4))
def test_any_overrides_and_yaml_config(pairs):
    from ilp_ray.config import AuditConfig, load_config, parse_overrides

    try:
        over = parse_overrides(pairs)
        load_config(AuditConfig, None, {"data": "x.jsonl", "sft_model": "m", **over})
    except ConfigError:
        pass
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "c.yaml"
        path.write_text("\n".join(pairs))
        try:
            load_config(AuditConfig, path)
        except ConfigError as e:
            assert e.file == str(path)


@pytest.mark.parametrize("text", ["data: [1\n", "- a\n- b\n", "data: x.jsonl\nsft_model: m\ndetect: {n: -1}\n"])
def test_fuzz_examples_by_hand(tmp_path, text):
    """The three kinds of config error the fuzzer meets, each with the file."""
    from ilp_ray.config import AuditConfig, load_config

    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(AuditConfig, path)
    assert e.value.file == str(path)
