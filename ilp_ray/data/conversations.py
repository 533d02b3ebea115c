"""The SFT layouts teams store their data in, turned into samples: ``(history, prompt, response)``.

``data_format`` names a layout, or ``auto`` reads it from the row's fields:

===================== ============================================= ==================================
layout                fields                                        a sample is
===================== ============================================= ==================================
``ilp``               ``prompt``, ``response`` (strings)            the row
``messages``          ``messages``: ``[{role, content}, ...]``      each assistant turn, after the
                      (TRL's conversational layout; an optional     turns before it
                      ``system`` string field or first turn)
``prompt-completion`` ``prompt``, ``completion``: both strings, or  the completion; a list prompt's
                      both lists of ``{role, content}`` turns       last turn is the question
``alpaca``            ``instruction``, optional ``input``,          ``instruction`` + a blank line +
                      ``output`` (optional ``system``)              ``input`` (if any), ``output``
``sharegpt``          ``conversations``: ``[{from, value}, ...]``   each assistant turn, as
                      (``human``/``user``, ``gpt``/``assistant``,   ``messages``
                      ``system``)
===================== ============================================= ==================================

Detection (``auto``): ``messages`` → messages; ``conversations`` → sharegpt; ``instruction`` and
``output`` → alpaca; ``prompt`` and ``completion`` → prompt-completion; ``prompt`` and ``response``
→ ilp. One file holds one layout: a row of another layout is an error that names both lines.

A conversation gives one sample per assistant turn: its prompt is the user turn just before it,
its ``history`` every turn before that (the system turn first), its ``turn`` the index of the
assistant turn among the conversation's assistant turns. Training and scoring render history and
prompt together (``ilp_ray.scoring.formats.render``: the chat template under ``chat``), so the
audit scores each turn exactly as ``ilp train sft`` trained it. Turns after the last assistant
turn carry no answer and are ignored.

Every problem raises ``RowError(field, message)`` with the field's path inside the row
(``messages[2].content``); the loader adds the file and line.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, get_args

from ilp_ray.config_base import DataFormat

DATA_FORMATS: tuple[str, ...] = get_args(DataFormat)
ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant",
                  "assistant": "assistant", "chatgpt": "assistant", "model": "assistant"}
# the fields of each layout that a row of it must carry (detection reads the first that matches)
SIGNATURES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("messages", ("messages",)), ("sharegpt", ("conversations",)), ("alpaca", ("instruction", "output")),
    ("prompt-completion", ("prompt", "completion")), ("ilp", ("prompt", "response")))
LIST_FIELDS = ("messages", "conversations", "options")  # list-valued: JSON-encoded in a CSV cell
LAYOUT_FIELDS = frozenset(f for _, need in SIGNATURES for f in need)
# fields a row may carry besides its layout's own: the shared ones, and Alpaca's optional input and system
OPTIONAL_FIELDS = ("id", "subset", "position", "options", "answer", "system", "input")


class RowError(ValueError):
    """A problem with one row: ``field`` is the path inside it (``messages[1].role``)."""

    def __init__(self, field: str, message: str):
        self.field, self.message = field, message
        super().__init__(f"{field}: {message}")


@dataclass(frozen=True)
class Sample:
    """One sample of a row, before the loader checks the fields every layout shares."""

    prompt: str
    response: str
    history: tuple[tuple[str, str], ...] = ()
    turn: int | None = None


def detect(fields: Iterable[str]) -> str | None:
    """The layout whose fields are all present (``SIGNATURES`` order), or None."""
    have = set(fields)
    return next((name for name, need in SIGNATURES if all(f in have for f in need)), None)


def closest(fields: Iterable[str]) -> tuple[str, list[str]] | None:
    """The layout sharing most fields with ``fields`` and the ones it lacks, or None if none shares any."""
    have = set(fields)
    best = max(SIGNATURES, key=lambda s: (sum(f in have for f in s[1]), s[0] == "ilp"))  # ties: ours
    return (best[0], [f for f in best[1] if f not in have]) if any(f in have for f in best[1]) else None


def describe_layouts() -> str:
    return "; ".join(f"{name}: {' + '.join(need)}" for name, need in SIGNATURES)


def samples(row: dict[str, Any], layout: str) -> list[Sample]:
    """The samples of one row in ``layout`` (not ``auto``); raises ``RowError``."""
    if layout == "ilp":
        return [Sample(_text(row, "prompt"), _text(row, "response"))]
    if layout == "alpaca":
        return [_alpaca(row)]
    if layout == "prompt-completion":
        return [_prompt_completion(row)]
    if layout == "messages":
        turns = _turns(row, "messages", "role", "content", None)
        return _split(_with_system(row, turns, "messages"), "messages")
    if layout == "sharegpt":
        turns = _turns(row, "conversations", "from", "value", SHAREGPT_ROLES)
        return _split(_with_system(row, turns, "conversations"), "conversations")
    raise ValueError(f"unknown layout {layout!r}")


# --- layouts -------------------------------------------------------------------------------------

def _alpaca(row: dict[str, Any]) -> Sample:
    instruction = _text(row, "instruction")
    extra = row.get("input")
    if extra is not None and not isinstance(extra, str):
        raise RowError("input", f"expected a string, got {type_name(extra)}")
    prompt = f"{instruction}\n\n{extra}" if extra and extra.strip() else instruction
    system = _optional_system(row)
    return Sample(prompt, _text(row, "output"), (("system", system),) if system else ())


def _prompt_completion(row: dict[str, Any]) -> Sample:
    prompt, completion = row["prompt"], row["completion"]
    if isinstance(prompt, str) and isinstance(completion, str):
        return Sample(_text(row, "prompt"), _text(row, "completion"))
    if isinstance(prompt, list) and isinstance(completion, list):
        before = _turns(row, "prompt", "role", "content", None)
        after = _turns(row, "completion", "role", "content", None)
        if not before or before[-1][0] != "user":
            raise RowError(f"prompt[{max(len(before) - 1, 0)}].role",
                           "a conversational prompt must end with a user turn")
        if len(after) != 1 or after[0][0] != "assistant":
            raise RowError("completion", "a conversational completion must be one assistant turn, "
                           f"got {len(after)} turn(s) ({', '.join(r for r, _ in after) or 'none'})")
        _system_first(before, "prompt")
        return Sample(before[-1][1], after[0][1], tuple(before[:-1]))
    if isinstance(prompt, (str, list)) and isinstance(completion, (str, list)):
        raise RowError("completion", "'prompt' and 'completion' must both be strings or both lists "
                       f"of turns, got a {type_name(prompt)} and a {type_name(completion)}")
    bad = "prompt" if not isinstance(prompt, (str, list)) else "completion"
    raise RowError(bad, f"expected a string or a list of turns, got {type_name(row[bad])}")


def _split(turns: list[tuple[str, str]], field: str) -> list[Sample]:
    """One sample per assistant turn of a conversation."""
    _system_first(turns, field)
    out: list[Sample] = []
    for i, (role, content) in enumerate(turns):
        if role != "assistant":
            continue
        if i == 0 or turns[i - 1][0] != "user":
            raise RowError(f"{field}[{i}].role", "an assistant turn must follow a user turn, not "
                           f"{'the start of the conversation' if i == 0 else 'a ' + turns[i - 1][0] + ' turn'}")
        out.append(Sample(turns[i - 1][1], content, tuple(turns[:i - 1]), turn=len(out)))
    if not out:
        raise RowError(field, "no assistant turn: the conversation has nothing to learn")
    return out


# --- fields --------------------------------------------------------------------------------------

def _turns(row: dict[str, Any], field: str, role_key: str, content_key: str,
           role_map: dict[str, str] | None) -> list[tuple[str, str]]:
    value = row[field]
    if not isinstance(value, list):
        raise RowError(field, f"expected a list of turns, got {type_name(value)}")
    if not value:
        raise RowError(field, "empty conversation")
    out = []
    for i, turn in enumerate(value):
        where = f"{field}[{i}]"
        if not isinstance(turn, dict):
            raise RowError(where, f"expected an object with '{role_key}' and '{content_key}', got {type_name(turn)}")
        for key in (role_key, content_key):
            if turn.get(key) is None:
                raise RowError(f"{where}.{key}", "missing")
        role, content = turn[role_key], turn[content_key]
        if not isinstance(role, str):
            raise RowError(f"{where}.{role_key}", f"expected a string, got {type_name(role)}")
        known = role_map or {r: r for r in ROLES}
        if role not in known:
            raise RowError(f"{where}.{role_key}", f"unknown role {role!r}; expected one of {', '.join(known)}")
        if not isinstance(content, str):
            raise RowError(f"{where}.{content_key}", f"expected a string, got {type_name(content)}")
        if not content.strip():
            raise RowError(f"{where}.{content_key}", "empty content")
        out.append((known[role], content))
    return out


def _with_system(row: dict[str, Any], turns: list[tuple[str, str]], field: str) -> list[tuple[str, str]]:
    system = _optional_system(row)
    if system is None:
        return turns
    if turns and turns[0][0] == "system":
        raise RowError("system", f"a 'system' field and a system turn in '{field}': give one")
    return [("system", system), *turns]


def _optional_system(row: dict[str, Any]) -> str | None:
    system = row.get("system")
    if system is None or (isinstance(system, str) and not system.strip()):
        return None
    if not isinstance(system, str):
        raise RowError("system", f"expected a string, got {type_name(system)}")
    return system


def _system_first(turns: list[tuple[str, str]], field: str) -> None:
    for i, (role, _) in enumerate(turns):
        if role == "system" and i > 0:
            raise RowError(f"{field}[{i}].role", "a system turn may only come first")


def _text(row: dict[str, Any], field: str) -> str:
    if row.get(field) is None:
        raise RowError(field, "missing required field" if field not in row else "must not be null")
    v = row[field]
    if not isinstance(v, str):
        raise RowError(field, f"expected a string, got {type_name(v)}")
    if not v.strip():
        raise RowError(field, "must not be empty")
    return v


def type_name(v: Any) -> str:
    """JSON-ish type name for messages ("number", not "float64")."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "float"
    if isinstance(v, str):
        return "string"
    if isinstance(v, (list, tuple)):
        return "list"
    if isinstance(v, dict):
        return "object"
    return type(v).__name__
