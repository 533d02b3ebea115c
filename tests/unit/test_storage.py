"""The verdict table's one schema: the writer and the loader hold every table to it."""

from __future__ import annotations

import pandas as pd
import pytest

from ilp_ray import storage as S
from ilp_ray.errors import DataError


def _table(drop=(), base=True):
    row = {c: 0 for c in S.VERDICT_COLUMNS}
    row.update(id="a", subset="default", question="q", options=["x", "y"], distractor_ids=["b"], probs=[0.4, 0.6])
    if base:
        row.update({c: 0 for c in S.BASE_VERDICT_COLUMNS}, base_probs=[0.5, 0.5])
    return pd.DataFrame([{k: v for k, v in row.items() if k not in drop}])


def test_written_verdicts_load_back(tmp_path):
    S.write_verdicts(_table(), tmp_path / "verdicts", size=1)
    S.write_verdicts(_table(base=False), tmp_path / "plain" / "verdicts", size=1)  # no base model: fine
    assert S.load_verdicts(tmp_path).loc[0, "id"] == "a"
    assert "base_probs" not in S.load_verdicts(tmp_path / "plain").columns


def test_a_table_without_a_verdict_column_is_refused(tmp_path):
    with pytest.raises(DataError, match=r"field 'in_top_k': the verdict table lacks columns \['in_top_k'\]"):
        S.write_verdicts(_table(drop=("in_top_k",)), tmp_path / "verdicts", size=1)
    assert not (tmp_path / "verdicts").exists()  # nothing written
    with pytest.raises(DataError, match=r"lacks columns \['known_by_base'\]"):  # some base columns, not all
        S.write_verdicts(_table(drop=("known_by_base",)), tmp_path / "verdicts", size=1)
    # a file an older audit wrote, read back
    folder = tmp_path / "old" / "verdicts"
    import pyarrow as pa

    S.write_table_atomic(pa.Table.from_pandas(_table(drop=("n_options",)), preserve_index=False),
                         S.shard_path(folder, 0))
    with pytest.raises(DataError, match=r"old/verdicts: field 'n_options'"):
        S.load_verdicts(tmp_path / "old")
