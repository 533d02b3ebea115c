"""Five-cause diagnosis of unlearned samples (paper 3.2): detectors, the decision, the report.

Public API: ``run_diagnosis(run_dir, DiagnosisConfig(...))`` → ``DiagnosisResult``; the detector
contract ``CauseDetector`` and its registry ``DETECTORS`` (``base.py``); the judges ``JUDGES``
(``judges.py``); ``decide`` and ``cause_table`` (``decide.py``).

Light on import (pydantic only; the rest loads on first attribute access): ``ilp_ray.config``
imports ``DiagnosisConfig`` from here.
"""

_LAZY = {"run_diagnosis": "run", "DiagnosisResult": "run", "DiagnosisConfig": "config",
         "CauseDetector": "base", "DiagnosisContext": "base", "DETECTORS": "registry", "JUDGES": "judges",
         "decide": "decide", "cause_table": "decide"}

__all__ = ["CAUSES", "DETECTORS", "JUDGES", "CauseDetector", "DiagnosisConfig", "DiagnosisContext",
           "DiagnosisResult", "cause_table", "decide", "run_diagnosis"]


def __getattr__(name):
    if name == "CAUSES":  # every registered cause, in decision order (the registry is the one list)
        from ilp_ray.diagnosis.registry import decision_order

        return tuple(decision_order())
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"ilp_ray.diagnosis.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'ilp_ray.diagnosis' has no attribute {name!r}")
