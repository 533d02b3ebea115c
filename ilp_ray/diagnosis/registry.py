"""The cause-detector registry: the one list of causes (light on import: no numpy, no pandas).

Each cause is its registered ``CauseDetector`` class, which declares its ``name``, numeral
(``roman``), ``title`` and ``short`` label, decision ``order``, config ``section`` and report
``color``. Everything that lists causes derives it from here: the config's ``causes`` (the names,
without importing a class), the decision order, the labels and colours of the report, the lab's
numeral map. A detector registered from outside (``DETECTORS.register("name", "pkg.mod:Class")``,
in a module named in ``diagnose.plugins``) is selectable like a built-in one.
"""

from __future__ import annotations

from ilp_ray.registry import Registry

DETECTORS: Registry = Registry("cause detector", "ilp_ray.diagnosis.base:CauseDetector")
for _name, _target in (
        ("sft_internal_conflict", "ilp_ray.diagnosis.sft_internal_conflict:SftInternalConflict"),
        ("left_side_forgetting", "ilp_ray.diagnosis.left_side_forgetting:LeftSideForgetting"),
        ("base_conflict", "ilp_ray.diagnosis.base_conflict:BaseConflict"),
        ("base_knowledge_gap", "ilp_ray.diagnosis.base_knowledge_gap:BaseKnowledgeGap"),
        ("insufficient_training", "ilp_ray.diagnosis.insufficient_training:InsufficientTraining")):
    DETECTORS.register(_name, _target)
BUILTIN: tuple[str, ...] = tuple(DETECTORS.registered())
UNATTRIBUTED = "unattributed"
UNATTRIBUTED_COLOR = "#7f7f7f"


def detector_classes(names=None) -> list[type]:
    """The classes of ``names`` (every registered cause when None), in decision order."""
    names = DETECTORS.registered() if names is None else list(names)
    return sorted((DETECTORS.get(n) for n in names), key=lambda c: (c.order, c.name))


def decision_order(names=None) -> list[str]:
    """Cause names in the order the decision tests them (``CauseDetector.order``); names that
    are not registered (a result built by hand) come last, in the order given."""
    if names is None:
        return [c.name for c in detector_classes()]
    names = list(names)
    known = set(DETECTORS.registered())
    return [c.name for c in detector_classes([n for n in names if n in known])] + [n for n in names if n not in known]


def _cls(name: str):
    return DETECTORS.get(name) if name in DETECTORS.registered() else None


def label(name: str) -> str:
    """A cause's label for tables and the report: numeral and short name ('III SFT-internal conflict')."""
    c = _cls(name)
    return f"{c.roman} {c.short}".strip() if c else name


def named(name: str) -> str:
    """How a sentence names a cause: 'III (SFT-internal conflict)'."""
    c = _cls(name)
    if c is None:
        return name
    return f"{c.roman} ({c.short})" if c.roman else c.short or name


def color(name: str) -> str:
    c = _cls(name)
    return c.color if c else UNATTRIBUTED_COLOR


def _numeral(roman: str) -> int:
    values = [{"I": 1, "V": 5, "X": 10}[ch] for ch in roman]
    return sum(-v if i + 1 < len(values) and v < values[i + 1] else v for i, v in enumerate(values))


def by_roman(names=None) -> dict[str, str]:
    """{numeral: cause name} of the causes that carry a numeral (the built-in five when None), I first."""
    classes = detector_classes(BUILTIN if names is None else names)
    return {c.roman: c.name for c in sorted((c for c in classes if c.roman), key=lambda c: _numeral(c.roman))}
