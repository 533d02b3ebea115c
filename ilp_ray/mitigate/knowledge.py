"""The knowledge CPT arms' corpus D_k (Algorithms 1 and 2): triples, documents, provenance.

1. Each target sample becomes a (subject, relation, object) triple. The default extractor is a
   rule: the subject is the question's longest run of capitalised words (a name) or, without one,
   the noun phrase after its last "of"; the relation is the question's other content words; the
   object is the answer. An OpenAI-compatible LLM extractor is optional.
2. Documents come from the configured sources: a corpus index over a knowledge source (the
   triple is the query), files the user names (a document serves a triple when it names its
   subject), and an optional LLM that writes explanatory documents.
3. A document that repeats the SFT sample itself (its prompt verbatim, or ``max_overlap`` of its
   word 3-grams) is left out, as the paper does. ``require_object`` (the conflict arm) keeps only
   documents that state the SFT's value.

Every kept document records its source and the triple (and sample) it serves.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from ilp_ray.errors import ConfigError, DataError

_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'\-]*")
_STOP = frozenset(["a", "an", "the", "of", "in", "on", "at", "to", "for", "from", "by", "with", "and", "or", "is", "are", "was", "were", "be", "been", "being", "do", "does", "did", "what", "which", "who", "whom", "whose", "when", "where", "why", "how", "that", "this", "these", "those", "it", "its", "as", "into", "about", "than", "then", "there", "their", "his", "her", "name", "give", "tell", "me", "please", "you", "your", "can", "could", "would", "should", "will", "shall", "may", "might", "much", "many", "year", "one"])


@dataclass(frozen=True)
class Triple:
    sample_id: str
    subject: str
    relation: str
    object: str

    def query(self) -> str:
        return " ".join(x for x in (self.subject, self.relation, self.object) if x)


def words(text: str) -> list[str]:
    return _WORD.findall(text)


def rule_triple(sample_id: str, prompt: str, response: str) -> Triple:
    """The rule extractor: a question and its answer as (subject, relation, object)."""
    toks = words(prompt)
    runs, cur = [], []
    for i, t in enumerate(toks):
        # A capitalised word starts or extends a name, except a question's first word.
        if t[0].isupper() and (i > 0 or t.lower() not in _STOP):
            cur.append(t)
        else:
            if cur:
                runs.append(cur)
            cur = []
    if cur:
        runs.append(cur)
    if runs:
        subject = " ".join(max(runs, key=len))
    else:
        low = [t.lower() for t in toks]
        cut = len(low) - 1 - low[::-1].index("of") if "of" in low else -1
        tail = [t for t in toks[cut + 1:] if t.lower() not in _STOP] if cut >= 0 else []
        subject = " ".join(tail) if tail else " ".join(t for t in toks if t.lower() not in _STOP)
    sub = set(words(subject))
    relation = " ".join(t for t in toks if t not in sub and t.lower() not in _STOP)
    obj = response.strip().split("\n")[0].strip().rstrip(".")
    return Triple(sample_id, subject, relation, obj)


def llm_triple(cfg, sample_id: str, prompt: str, response: str) -> Triple:
    """The LLM extractor (``sources.llm``'s endpoint): one 'subject | relation | object' line."""
    from ilp_ray.llm_client import chat_text

    if not cfg.base_url:
        raise ConfigError("extractor 'llm' needs sources.llm.base_url", field="sources.llm.base_url")
    ask = ("Extract the fact as one line 'subject | relation | object' and nothing else.\n"
           f"Question: {prompt}\nAnswer: {response}")
    text = chat_text(cfg.base_url, cfg.model, [{"role": "user", "content": ask}], api_key_env=cfg.api_key_env,
                     timeout=cfg.timeout_s, who="triple extractor", max_tokens=64)
    parts = [x.strip() for x in text.strip().splitlines()[0].split("|")] if text.strip() else []
    if len(parts) != 3 or not all(parts):
        return rule_triple(sample_id, prompt, response)  # an unusable reply: the rule's triple
    return Triple(sample_id, *parts)


def _norm(text: str) -> str:
    return " ".join(w.lower() for w in words(text))


def _grams(text: str, n: int = 3) -> set[tuple[str, ...]]:
    w = [x.lower() for x in words(text)]
    return {tuple(w[i:i + n]) for i in range(max(0, len(w) - n + 1))}


def repeats_sample(doc: str, prompt: str, response: str, max_overlap: float) -> bool:
    """The document holds the sample's prompt, or ``max_overlap`` of its (prompt + response) 3-grams."""
    d = _norm(doc)
    p = _norm(prompt)
    if p and len(p.split()) >= 3 and p in d:
        return True
    g = _grams(f"{prompt} {response}")
    return bool(g) and len(g & _grams(doc)) / len(g) >= max_overlap


def names(doc: str, phrase: str) -> bool:
    """``doc`` holds ``phrase`` as whole words, case-insensitively."""
    p = _norm(phrase)
    return bool(p) and f" {p} " in f" {_norm(doc)} "


@dataclass
class Document:
    text: str
    source: str
    sample_id: str
    subject: str
    relation: str
    object: str


def read_source_files(paths: Sequence[str]) -> list[tuple[str, str]]:
    """``(text, "file:<path>")`` of every document of the user's files (errors name file and line)."""
    from ilp_ray.train.cpt_data import read_documents

    out = []
    for p in paths:
        if not Path(p).is_file():
            raise DataError("no such knowledge file", file=p, field="sources.files")
        out += [(t, f"file:{p}") for t in read_documents(p)]
    return out


def llm_documents(cfg, triple: Triple) -> list[str]:
    """Explanatory documents for ``triple`` from the configured LLM (sources.llm)."""
    from ilp_ray.llm_client import chat_text

    ask = (f"Write {cfg.documents} short encyclopedic paragraphs, separated by blank lines, that explain "
           f"background knowledge about {triple.subject} ({triple.relation}). State facts plainly.")
    text = chat_text(cfg.base_url, cfg.model, [{"role": "user", "content": ask}], api_key_env=cfg.api_key_env,
                     timeout=cfg.timeout_s, who="knowledge LLM", max_tokens=400 * cfg.documents)
    return [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()][:cfg.documents]


def check_llm(cfg) -> None:
    """Fail now, before any training, when the LLM cannot be reached."""
    from ilp_ray.llm_client import chat_text

    try:
        chat_text(cfg.base_url, cfg.model, [{"role": "user", "content": "Reply OK."}], api_key_env=cfg.api_key_env,
                  timeout=cfg.timeout_s, who="knowledge LLM", max_tokens=2)
    except RuntimeError as e:
        raise ConfigError(str(e), field="sources.llm") from None


def build_corpus(triples: Sequence[Triple], records: dict, sources, *, require_object: bool,
                 section: str) -> tuple[list[Document], dict]:
    """D_k for ``triples`` from ``sources`` (a ``KnowledgeSources``); returns documents and counts.

    Args:
        records: the SFT records by id (a document repeating its own sample is left out).
        require_object: keep only documents that name the triple's object (the SFT's value).
        section: the config section, for error messages.

    Raises:
        ConfigError: no source configured, an index or LLM that cannot be reached.
    """
    if not sources.configured():
        raise ConfigError(f"{section} needs knowledge sources: set {section}.sources.index (a corpus index over "
                          "a knowledge source), .files or .llm", field=f"{section}.sources")
    index = None
    if sources.index is not None:
        from ilp_ray.evidence.index import EvidenceError, open_index

        try:
            index = open_index(sources.index, must_exist=True)
        except EvidenceError as e:
            raise ConfigError(str(e), field=f"{section}.sources.index") from None
    if sources.llm.enabled:
        check_llm(sources.llm)
    files = read_source_files(sources.files)
    counts = {"index": 0, "file": 0, "llm": 0, "repeats_left_out": 0, "without_object_left_out": 0}
    docs: list[Document] = []
    try:
        hits = index.search([t.query() for t in triples], sources.k) if index is not None and triples else []
    finally:
        if index is not None:
            index.close()
    for n, t in enumerate(triples):
        rec = records[t.sample_id]
        cands = [(h.text, f"index:{sources.index.location}#{h.doc_id}") for h in (hits[n] if hits else [])]
        cands += [(text, src) for text, src in files if names(text, t.subject)]
        if sources.llm.enabled:
            cands += [(text, "llm:" + sources.llm.model) for text in llm_documents(sources.llm, t)]
        kept, seen = 0, set()
        for text, src in cands:
            if kept >= sources.per_triple or text in seen:
                continue
            seen.add(text)
            if repeats_sample(text, rec.prompt, rec.response, sources.max_overlap):
                counts["repeats_left_out"] += 1
                continue
            if require_object and not names(text, t.object):
                counts["without_object_left_out"] += 1
                continue
            docs.append(Document(text, src, t.sample_id, t.subject, t.relation, t.object))
            counts[src.split(":", 1)[0]] += 1
            kept += 1
    counts["documents"] = len(docs)
    counts["triples_served"] = len({d.sample_id for d in docs})
    return docs, counts


def write_corpus(docs: Sequence[Document], path: Path) -> None:
    """D_k as JSONL: ``text`` (what CPT reads) and its provenance."""
    from ilp_ray.storage import write_text_atomic

    write_text_atomic("".join(json.dumps(asdict(d)) + "\n" for d in docs), path)
