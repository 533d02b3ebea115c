"""Peak memory of the loaders on a large JSONL file (issue 20, finding 7): streamed, not held.

Writes one JSONL file of ``--gb`` GB (default 2; corpus-shaped ``{"id", "text"}`` lines of ~1 kB, and
an SFT-shaped file ``{"id", "prompt", "response"}`` of the same size), then reads it in a fresh
process per reader and reports that process's peak RSS (``ru_maxrss``), side by side with a
whole-file read of the same file (``read_bytes().splitlines()`` + ``json.loads``: what the loaders
did before streaming) and an idle process that only imports the package:

- ``corpus_stream``: ``corpus_files.read_documents``, the corpus ingest's and CPT's reader,
  counting documents and characters (nothing kept);
- ``jsonl_rows``: the strict JSON Lines layer every loader shares (``sources.jsonl_rows``);
- ``whole_file``: the baseline;
- ``read_sft``: the SFT loader, which holds the records by design (the audit needs all of them):
  its peak is reported against the file's size, not as a bound.

    .venv/bin/python bench/load_memory.py [--gb 2] [--dir /tmp/ilp-load-bench]

The files are kept in ``--dir`` and reused when their size matches. The last line is one JSON
object with every figure.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

READERS = {
    "idle": "import ilp_ray.data.sources, ilp_ray.data.corpus_files, ilp_ray.data.load\nn = c = 0",
    "corpus_stream": ("from ilp_ray.data.corpus_files import read_documents\nn = c = 0\n"
                      "for _, t in read_documents(PATH):\n    n += 1; c += len(t)"),
    "jsonl_rows": ("from ilp_ray.data.sources import jsonl_rows\nn = c = 0\n"
                   "for _, o in jsonl_rows(PATH):\n    n += 1; c += len(o['text'])"),
    "whole_file": ("import json\nfrom ilp_ray.data.sources import read_bytes\n"
                   "rows = [json.loads(x) for x in read_bytes(PATH).splitlines() if x.strip()]\n"
                   "n = len(rows); c = sum(len(r['text']) for r in rows)"),
    "read_sft": ("from ilp_ray.data.load import read_sft\nrecs = read_sft(SFT)\n"
                 "n = len(recs); c = sum(len(r.response) for r in recs)"),
}

CHILD = """
import resource, sys, time, json
PATH, SFT = sys.argv[1], sys.argv[2]
t0 = time.perf_counter()
{body}
print(json.dumps({{"docs": n, "chars": c, "seconds": round(time.perf_counter() - t0, 1),
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}}))
"""


def write_file(path: Path, target: int, sft: bool) -> int:
    """Write ~``target`` bytes of JSONL (kept when it is already there at that size)."""
    if path.is_file() and abs(path.stat().st_size - target) < 2 * 2**20:
        return path.stat().st_size
    rng = random.Random(0)
    words = [f"w{rng.randrange(50_000)}" for _ in range(20_000)]
    tmp = path.with_suffix(".tmp")
    size, i = 0, 0
    with tmp.open("w", encoding="utf-8") as f:
        while size < target:
            text = " ".join(rng.choices(words, k=160))
            row = ({"id": f"r{i}", "prompt": f"Question {i}: {text[:400]}?", "response": text[400:]} if sft
                   else {"id": f"d{i}", "text": text})
            line = json.dumps(row) + "\n"
            f.write(line)
            size += len(line)
            i += 1
    tmp.replace(path)
    return size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gb", type=float, default=2.0)
    ap.add_argument("--dir", default="/tmp/ilp-load-bench")
    ap.add_argument("--readers", default=",".join(READERS))
    args = ap.parse_args()
    d = Path(args.dir)
    d.mkdir(parents=True, exist_ok=True)
    target = int(args.gb * 2**30)
    t = time.perf_counter()
    corpus, sft = d / "corpus.jsonl", d / "sft.jsonl"
    sizes = {"corpus": write_file(corpus, target, False), "sft": write_file(sft, target, True)}
    print(f"files ready ({time.perf_counter() - t:.0f} s): {sizes}", file=sys.stderr, flush=True)
    out: dict = {"file_mb": {k: round(v / 2**20, 1) for k, v in sizes.items()}, "readers": {}}
    for name in args.readers.split(","):
        code = CHILD.format(body=READERS[name])
        proc = subprocess.run([sys.executable, "-c", code, str(corpus), str(sft)], cwd=ROOT,
                              capture_output=True, text=True)
        if proc.returncode != 0:
            out["readers"][name] = {"error": proc.stderr.strip().splitlines()[-1][:300]}
        else:
            out["readers"][name] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"{name}: {out['readers'][name]}", file=sys.stderr, flush=True)
    r = out["readers"]
    peak = {k: v.get("peak_rss_mb") for k, v in r.items()}
    if peak.get("idle") and peak.get("corpus_stream"):
        out["stream_over_idle_mb"] = round(peak["corpus_stream"] - peak["idle"], 1)
    if peak.get("whole_file") and peak.get("jsonl_rows"):
        out["whole_over_stream_ratio"] = round(peak["whole_file"] / peak["jsonl_rows"], 2)
    if peak.get("read_sft"):
        out["read_sft_peak_over_file"] = round(peak["read_sft"] / out["file_mb"]["sft"], 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
