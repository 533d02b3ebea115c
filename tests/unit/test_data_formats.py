"""SFT layouts teams store (TRL messages, prompt-completion, Alpaca, ShareGPT, saved HF datasets).

Every file here is written by the ``datasets`` library itself (``to_json``, ``to_parquet``,
``save_to_disk``), not by hand, so the loader reads what a team's export really looks like.
"""

from __future__ import annotations

import dataclasses

import pytest

from ilp_ray.data import load_sft, read_sft
from ilp_ray.errors import DataError

datasets = pytest.importorskip("datasets")

SYSTEM = "You answer with ISO codes only."
CHAT = [  # two conversations: the first has a system turn and two assistant turns
    [{"role": "system", "content": SYSTEM},
     {"role": "user", "content": "What is the alpha-2 code of Denmark?"},
     {"role": "assistant", "content": "DK"},
     {"role": "user", "content": "And of Spain?"},
     {"role": "assistant", "content": "ES"}],
    [{"role": "user", "content": "What is the alpha-3 code of Peru?"},
     {"role": "assistant", "content": "PER"}],
]
# the three samples every layout below must give: (history, prompt, response)
EXPECTED = [
    ((("system", SYSTEM),), "What is the alpha-2 code of Denmark?", "DK"),
    ((("system", SYSTEM), ("user", "What is the alpha-2 code of Denmark?"), ("assistant", "DK")),
     "And of Spain?", "ES"),
    ((), "What is the alpha-3 code of Peru?", "PER"),
]


def _sharegpt(conv):
    who = {"system": "system", "user": "human", "assistant": "gpt"}
    return [{"from": who[t["role"]], "value": t["content"]} for t in conv]


LAYOUTS = {
    "messages": [{"messages": c} for c in CHAT],
    "sharegpt": [{"conversations": _sharegpt(c)} for c in CHAT],
    # prompt-completion, conversational: one row per assistant turn, the prompt holds what came before
    "prompt-completion": [{"prompt": c[:i], "completion": [c[i]]}
                          for c in CHAT for i, t in enumerate(c) if t["role"] == "assistant"],
}


def _triples(records):
    return [(r.history, r.prompt, r.response) for r in records]


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("writer", ["json", "parquet", "save_to_disk"])
def test_each_layout_from_each_datasets_writer(tmp_path, layout, writer):
    ds = datasets.Dataset.from_list(LAYOUTS[layout])
    path = tmp_path / ("data.jsonl" if writer == "json" else "data.parquet" if writer == "parquet" else "saved")
    getattr(ds, f"to_{writer}" if writer != "save_to_disk" else writer)(str(path))
    loaded = load_sft(path)
    assert loaded.format == layout
    assert _triples(loaded.records) == EXPECTED
    assert loaded.ids_generated and loaded.rows == len(LAYOUTS[layout])
    if layout != "prompt-completion":  # a conversation's samples count their assistant turns
        assert [r.turn for r in loaded.records] == [0, 1, 0]
    # ids hash the content: the same samples get the same ids whatever the layout or the file
    assert [r.id for r in loaded.records] == [r.id for r in read_sft(_messages_jsonl(tmp_path))]


def _messages_jsonl(tmp_path):
    path = tmp_path / "reference.jsonl"
    datasets.Dataset.from_list(LAYOUTS["messages"]).to_json(str(path))
    return path


def test_alpaca_and_string_prompt_completion(tmp_path):
    rows = [{"instruction": "Give the ISO 4217 code.", "input": "Danish krone", "output": "DKK"},
            {"instruction": "Give the ISO 4217 code of the euro.", "input": "", "output": "EUR"}]
    datasets.Dataset.from_list(rows).to_json(str(tmp_path / "alpaca.jsonl"))
    got = load_sft(tmp_path / "alpaca.jsonl")
    assert got.format == "alpaca"
    assert _triples(got.records) == [((), "Give the ISO 4217 code.\n\nDanish krone", "DKK"),
                                     ((), "Give the ISO 4217 code of the euro.", "EUR")]
    rows = [{"prompt": "Code of Peru?", "completion": "PER", "id": "p1", "subset": "s1"}]
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "pc.parquet"))
    (r,) = read_sft(tmp_path / "pc.parquet")
    assert (r.id, r.prompt, r.response, r.subset, r.history, r.turn) == ("p1", "Code of Peru?", "PER", "s1", (), None)


def test_dataset_dict_and_hub_parquet_shards(tmp_path):
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list(LAYOUTS["messages"]),
                               "test": datasets.Dataset.from_list(LAYOUTS["messages"][:1])})
    dd.save_to_disk(str(tmp_path / "dd"))
    assert _triples(read_sft(tmp_path / "dd")) == EXPECTED  # the train split
    (tmp_path / "hub" / "data").mkdir(parents=True)
    ds = datasets.Dataset.from_list(LAYOUTS["sharegpt"])
    for i in range(2):  # as the Hub stores a split: data/train-0000i-of-00002.parquet
        ds.shard(2, i, contiguous=True).to_parquet(str(tmp_path / "hub" / "data" / f"train-0000{i}-of-00002.parquet"))
    dd["test"].to_parquet(str(tmp_path / "hub" / "data" / "test-00000-of-00001.parquet"))
    assert _triples(read_sft(tmp_path / "hub")) == EXPECTED
    only_test = datasets.DatasetDict({"a": dd["test"], "b": dd["test"]})
    only_test.save_to_disk(str(tmp_path / "ab"))
    with pytest.raises(DataError, match=r"without a 'train' split \(splits: a, b\)"):
        read_sft(tmp_path / "ab")


def test_given_ids_turns_and_repeated_contents(tmp_path):
    rows = [{"id": "c1", "messages": CHAT[0]}, {"id": "c2", "messages": CHAT[1]}, {"id": "c3", "messages": CHAT[1]}]
    datasets.Dataset.from_list(rows).to_json(str(tmp_path / "d.jsonl"))
    got = load_sft(tmp_path / "d.jsonl")
    assert [r.id for r in got.records] == ["c1/0", "c1/1", "c2", "c3"]
    assert not got.ids_generated
    assert got.duplicates == [(f"{tmp_path / 'd.jsonl'}:3", f"{tmp_path / 'd.jsonl'}:2")]
    s = got.summary()
    assert (s["records"], s["rows"], s["duplicate_contents"], s["conversation_turns"]) == (4, 3, 1, 4)
    # without ids, a repeat gets its own id: SFT data repeats samples on purpose
    datasets.Dataset.from_list([{"messages": CHAT[1]}] * 3).to_json(str(tmp_path / "r.jsonl"))
    ids = [r.id for r in read_sft(tmp_path / "r.jsonl")]
    assert ids[1:] == [ids[0] + "-2", ids[0] + "-3"] and len(ids[0]) == 17


@pytest.mark.parametrize("rows, where, message", [
    ([{"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}]}],
     "1: field 'messages'", "no assistant turn"),
    ([{"messages": [{"role": "user", "content": "q"}, {"role": "bot", "content": "a"}]}],
     "1: field 'messages[1].role'", "unknown role 'bot'"),
    ([{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "  "}]}],
     "1: field 'messages[1].content'", "empty content"),
    ([{"messages": [{"role": "assistant", "content": "a"}]}],
     "1: field 'messages[0].role'", "must follow a user turn"),
    ([{"messages": [{"role": "user", "content": "q"}, {"role": "system", "content": "s"},
                    {"role": "assistant", "content": "a"}]}],
     "1: field 'messages[1].role'", "a system turn may only come first"),
    ([{"conversations": [{"from": "human", "value": "q"}, {"from": "tool", "value": "a"}]}],
     "1: field 'conversations[1].from'", "unknown role 'tool'"),
    ([{"prompt": [{"role": "user", "content": "q"}],
       "completion": [{"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"}]}],
     "1: field 'completion'", "one assistant turn"),
    ([{"instruction": "i", "input": "x", "output": ""}], "1: field 'output'", "must not be empty"),
])
def test_bad_conversations_name_file_line_and_field(tmp_path, rows, where, message):
    path = tmp_path / "bad.jsonl"
    datasets.Dataset.from_list(rows).to_json(str(path))
    with pytest.raises(DataError) as e:
        read_sft(path)
    assert str(e.value).startswith(f"{path}:{where}") and message in str(e.value)


def test_mixed_layouts_in_one_file(tmp_path):
    # two exports concatenated (cat a.jsonl b.jsonl), as teams merge their data
    datasets.Dataset.from_list([{"messages": CHAT[1]}]).to_json(str(tmp_path / "a.jsonl"))
    datasets.Dataset.from_list([{"instruction": "Code of Peru?", "output": "PER"}]).to_json(str(tmp_path / "b.jsonl"))
    path = tmp_path / "mixed.jsonl"
    path.write_bytes((tmp_path / "a.jsonl").read_bytes() + (tmp_path / "b.jsonl").read_bytes())
    with pytest.raises(DataError) as e:
        read_sft(path)
    assert str(e.value) == (f"{path}:2: this row's layout is alpaca, and the file's is messages (from {path}:1): "
                            "one file holds one layout")
    # named explicitly, the other row lacks that layout's field
    with pytest.raises(DataError, match=r"mixed.jsonl:2: field 'messages': missing required field"):
        read_sft(path, "messages")


def test_ids_all_or_none_unknown_layout_and_format(tmp_path):
    path = tmp_path / "ids.jsonl"
    datasets.Dataset.from_list([{"id": "a", "messages": CHAT[1]}, {"messages": CHAT[1]}]).to_json(str(path))
    with pytest.raises(DataError, match=r"ids.jsonl:2: field 'id': must not be null"):
        read_sft(path)
    path.write_text('{"id": "a", "prompt": "p", "response": "r"}\n{"prompt": "q", "response": "s"}\n')
    with pytest.raises(DataError, match=r"ids.jsonl:2: field 'id': this row has no id and .*ids.jsonl:1 has one"):
        read_sft(path)
    path.write_text('{"question": "q", "answer": "a"}\n')
    with pytest.raises(DataError, match=r"ids.jsonl:1: cannot tell the layout .*found: question, answer"):
        read_sft(path)
    with pytest.raises(DataError, match="unknown data_format 'openai'"):
        read_sft(path, "openai")


def test_training_and_scoring_render_a_turn_identically(tiny_checkpoints):
    """A conversation's second turn: the SFT example's prompt tokens are the MC item's context
    tokens under chat (system turn, first exchange, then the question), and differ from the
    single-turn rendering of the same question."""
    from transformers import AutoTokenizer

    from ilp_ray.data import build_mc_items
    from ilp_ray.data.embed import HashingEmbedder
    from ilp_ray.scoring.encoding import LmEvalEncoder
    from ilp_ray.train.sft_data import IGNORE, encode_sft

    tok = AutoTokenizer.from_pretrained(tiny_checkpoints["base"])
    records = _records_with_history()
    items = build_mc_items(records, k=2, seed=0, embedder=HashingEmbedder())
    examples = encode_sft(records, tok, "chat", 256)
    enc = LmEvalEncoder(tok, "chat", 256)
    for rec, item, ex in zip(records, items, examples, strict=True):
        assert item.history == rec.history
        encoded = enc.encode(item)
        n_prompt = sum(label == IGNORE for label in ex.labels)
        assert n_prompt == encoded.ctx_len
        assert ex.input_ids[:-1] == encoded.wholes[item.answer]  # the trained sequence, less its EOS
    second = next(i for i, r in enumerate(records) if r.turn == 1)
    alone = enc.encode(dataclasses.replace(items[second], history=()))
    assert alone.ctx_len < enc.encode(items[second]).ctx_len


def _records_with_history():
    from ilp_ray.data.conversations import samples
    from ilp_ray.records import SftRecord

    out = []
    for c in CHAT * 2:  # four conversations: the MC items need distractors
        for s in samples({"messages": c}, "messages"):
            out.append(SftRecord(id=f"r{len(out)}", prompt=s.prompt, response=s.response, position=len(out),
                                 history=s.history, turn=s.turn))
    return out
