"""What the lab's encyclopedia supplies the CPT arms of the mitigation experiment (issue 19).

For each I and II SFT sample of a lab world: is there an encyclopedia document that names the
sample's entity and the SFT's value, and that the mitigation loop's repeat filter keeps
(``mitigate.knowledge.repeats_sample`` at the loop's ``sources.max_overlap``)? A document the
filter drops restates the SFT sample; CPT on it would be more SFT, not knowledge.

Two forms side by side on the same worlds: ``statements`` (one document per fact in the world's
own statement templates, the encyclopedia before 2026-12-07) and ``entries`` (the current
``lab.mitigations.encyclopedia``: one reference entry per entity). This is the supply, an upper
bound of what the index search then serves; nothing is trained.

    .venv/bin/python bench/encyclopedia_supply.py --tiny-seeds 20 21 22 23 24 --smollm2-seeds 20 21 22
"""

from __future__ import annotations

import argparse
import json
import time


def statements(world) -> list[str]:
    """The encyclopedia's first form: one document per SFT fact (III left out), in every statement template."""
    docs, seen = [], set()
    for t in world.truth:
        key = (t["entity"], t["relation"])
        if t["category"] == "III" or key in seen or t["relation"] not in world.relations:
            continue
        seen.add(key)
        docs.append(" ".join(s.format(e=key[0], v=t["value"]) for s in world.relations[t["relation"]].statements))
    return docs


def supplied(world, docs: list[str], max_overlap: float) -> dict[str, list[int]]:
    """Per category (I, II): [samples with a document the repeat filter keeps, samples]."""
    from ilp_ray.mitigate.knowledge import names, repeats_sample

    sft = {r["id"]: r for r in world.sft}
    out = {}
    for cat in ("I", "II"):
        rows = [t for t in world.truth if t["category"] == cat]
        kept = sum(any(not repeats_sample(d, sft[t["id"]]["prompt"], sft[t["id"]]["response"], max_overlap)
                       for d in docs if names(d, t["entity"]) and names(d, t["value"])) for t in rows)
        out[cat] = [kept, len(rows)]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny-seeds", type=int, nargs="*", default=[20, 21, 22, 23, 24])
    ap.add_argument("--smollm2-seeds", type=int, nargs="*", default=[20, 21, 22],
                    help="needs SmolLM2's probe (cached after the first smollm2 lab run)")
    ap.add_argument("--size", default="small")
    args = ap.parse_args()

    from ilp_ray.lab import real as R
    from ilp_ray.lab import world as W
    from ilp_ray.lab.config import LabConfig
    from ilp_ray.lab.mitigations import encyclopedia
    from ilp_ray.mitigate.config import KnowledgeSources

    t0 = time.perf_counter()
    max_overlap = KnowledgeSources().max_overlap
    worlds = [("tiny", s) for s in args.tiny_seeds] + [("smollm2", s) for s in args.smollm2_seeds]
    probe = None
    rows = {}
    print(f"{'world':<12} {'form':<11} {'I kept':>8} {'II kept':>8}")
    for base, seed in worlds:
        if base == "tiny":
            world = W.generate(seed, args.size)
        else:
            cfg = LabConfig()
            probe = probe or R.probe(cfg.smollm2.model)
            world = R.generate_real(seed, W.SIZES[args.size], probe, cfg.smollm2.known_p, cfg.smollm2.unknown_p)
        forms = {"statements": statements(world), "entries": [d["text"] for d in encyclopedia(world)]}
        rows[f"{base}-{seed}"] = got = {f: supplied(world, docs, max_overlap) for f, docs in forms.items()}
        for f, g in got.items():
            print(f"{base + '-' + str(seed):<12} {f:<11} {'{}/{}'.format(*g['I']):>8} {'{}/{}'.format(*g['II']):>8}")
    share = {f: sum(r[f][c][0] for r in rows.values() for c in ("I", "II"))
             / max(1, sum(r[f][c][1] for r in rows.values() for c in ("I", "II"))) for f in ("statements", "entries")}
    print(json.dumps({"bench": "encyclopedia_supply", "size": args.size, "max_overlap": max_overlap,
                      "worlds": rows, "share_supplied": share, "wall_s": round(time.perf_counter() - t0, 1)}))


if __name__ == "__main__":
    main()
