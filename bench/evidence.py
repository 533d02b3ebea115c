"""Corpus evidence at scale on one machine: ingest, BM25 retrieval at K=100, Spark matching.

A synthetic corpus of ``--passages`` one-passage documents (default 200k) is generated
deterministically: each states one attribute of one made-up entity ("The capital of Zorvania-17
is Amberfield-3.") amid filler words, in JSONL shards. Measured:

- ingest: ``ilp corpus index``'s code path (Ray Data read + chunk, tantivy bulk add), passages/s;
- retrieval: ``CorpusIndex.search`` at K=100 in batches of 64 in the driver, queries/s (the Ray
  actor path adds only its start-up);
- matching: ``match_candidates`` on Spark for ``--items`` items × their K hits, items/s;
- peak RSS of this process and its children (Ray workers, Spark's JVM excluded: it is not a child).

    OMP_NUM_THREADS=1 .venv/bin/python bench/evidence.py                            # 200k, hashing
    OMP_NUM_THREADS=1 .venv/bin/python bench/evidence.py --embedder minilm --items 20

The last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ATTRS = ["capital", "founder", "currency", "national animal", "largest lake", "main export"]
FILL = ["amber", "anchor", "apple", "arctic", "autumn", "badger", "bamboo", "banner", "barley", "basalt", "beacon", "birch", "bison", "blossom", "bramble", "bronze", "brook", "cactus", "canyon", "canvas", "cedar", "cellar", "chalk", "cherry", "cinder", "citrus", "clover", "cobalt", "comet", "copper", "coral", "cotton", "crater", "crimson", "crystal", "cypress", "dahlia", "delta", "desert", "dolphin"]


def entity(i: int) -> str:
    return f"Zorvania{i}"


def value(i: int, a: int) -> str:
    return f"{FILL[(i * 7 + a) % len(FILL)].title()}field{i % 97}"


def write_corpus(root: Path, n: int, shards: int = 8) -> None:
    rng = random.Random(0)
    per = -(-n // shards)
    for s in range(shards):
        with open(root / f"corpus-{s:02d}.jsonl", "w") as f:
            for i in range(s * per, min(n, (s + 1) * per)):
                a = i % len(ATTRS)
                filler = " ".join(rng.choices(FILL, k=30))
                text = f"{filler}. The {ATTRS[a]} of {entity(i)} is {value(i, a)}. {filler[:80]}"
                f.write(json.dumps({"id": f"d{i}", "text": text}) + "\n")


def peak_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round(max(own, kids) / 1024, 1)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--passages", type=int, default=200_000)
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--items", type=int, default=200, help="Items matched on Spark (each with its K hits).")
    ap.add_argument("--embedder", choices=["hashing", "minilm"], default="hashing")
    ap.add_argument("--theta", type=float, default=0.5, help="Cosine kept by the matcher.")
    args = ap.parse_args(argv)

    from ilp_ray.env import apply_defaults, init_ray

    apply_defaults()
    import pandas as pd

    from ilp_ray.evidence.config import ChunkConfig, IndexConfig, IngestConfig, MatchConfig
    from ilp_ray.evidence.index import open_index
    from ilp_ray.evidence.ingest import ingest
    from ilp_ray.evidence.match import match_candidates
    from ilp_ray.evidence.query import make_fact

    out: dict = {"passages": args.passages, "k": args.k, "embedder": args.embedder, "theta": args.theta}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "corpus").mkdir()
        write_corpus(root / "corpus", args.passages)
        init_ray(None, num_cpus=2)
        cfg = IndexConfig(location=str(root / "idx"))
        rep = ingest([str(root / "corpus")], cfg, ChunkConfig(words=100, overlap=20), IngestConfig(), progress=False)
        out["ingest"] = {k: rep[k] for k in ("docs", "passages", "seconds", "passages_per_s", "index_bytes")}
        facts = [make_fact(str(i), f"What is the {ATTRS[i % len(ATTRS)]} of {entity(i)}?",
                           value(i, i % len(ATTRS))) for i in range(0, args.passages, max(1, args.passages // args.queries))]
        with open_index(cfg, must_exist=True) as ix:
            t0 = time.perf_counter()
            hits = []
            for b in range(0, len(facts), 64):
                hits += ix.search([f.query for f in facts[b:b + 64]], args.k)
            dt = time.perf_counter() - t0
        top1 = sum(bool(h) and h[0].doc_id == f"d{f.id}" for f, h in zip(facts, hits)) / len(facts)
        out["retrieve"] = {"queries": len(facts), "seconds": round(dt, 2), "queries_per_s": round(len(facts) / dt, 1),
                           "top1_is_the_fact": round(top1, 3)}
        n = min(args.items, len(facts))
        rows = [(f.id, h.id, h.text, h.score) for f, hs in zip(facts[:n], hits[:n]) for h in hs]
        cands = pd.DataFrame(rows, columns=["id", "passage_id", "text", "bm25"])
        items = pd.DataFrame({"id": [f.id for f in facts[:n]], "query": [f"{f.prompt} {f.answer}" for f in facts[:n]]})
        t0 = time.perf_counter()
        m = match_candidates(items, cands, MatchConfig(theta=args.theta, embedder=args.embedder, master="local[2]"))
        dt = time.perf_counter() - t0
        out["match"] = {"items": n, "pairs": len(cands), "kept": len(m), "seconds": round(dt, 2),
                        "items_per_s": round(n / dt, 2)}
    out["peak_rss_mb"] = peak_mb()
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
