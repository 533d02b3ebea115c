"""Data and config builders for the training tests: small, deterministic, built in code."""

import json

import pytest

ENTITIES = ["apple", "river", "castle", "dragon", "lantern", "meadow", "violin", "comet"]
COLOURS = ["red", "blue", "green", "yellow"]


def write_jsonl(path, rows):
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return path


def interference_rows(repeats: int = 1):
    """Subset A ("spring") and B ("autumn"): the same entities, near-identical prompts, other colours.

    Every entity's B colour differs from its A colour, and all four colours are used in each
    subset, so an A item's options include the colour that B taught for the same entity.
    ``repeats`` copies of each fact (distinct ids) make each subset a longer stretch of training.
    """
    rows = []
    for subset, season, shift in (("A", "spring", 0), ("B", "autumn", 1)):
        for r in range(repeats):
            for i, e in enumerate(ENTITIES):
                rows.append({"id": f"{subset}{i}" + (f"-{r}" if repeats > 1 else ""),
                             "prompt": f"In {season}, what colour is the {e}?",
                             "response": COLOURS[(i + shift) % 4], "subset": subset})
    return rows


def train_config(data, run_dir, name, **over):
    """A tiny-model SFT config dict (deep-merged with ``over``)."""
    cfg = {
        "data": str(data), "run_dir": str(run_dir), "name": name,
        "model": {"tiny": {"hidden_size": 64, "num_layers": 2, "vocab_size": 320, "seed": 0}},
        "optim": {"lr": 3e-3, "batch_size": 4, "epochs": 10},
        "checkpoint": {"every_steps": 1000},
        "trajectory": {"embedder": "hashing", "k": 4},
        "tracking": {"enabled": False},
        "timing_skip_steps": 0,
    }
    for key, value in over.items():
        node = cfg
        *head, last = key.split(".")
        for k in head:
            node = node.setdefault(k, {})
        node[last] = value
    return cfg


@pytest.fixture(scope="session")
def interference_jsonl(tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("interference") / "data.jsonl", interference_rows())
