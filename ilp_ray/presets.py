"""Named presets: settings calibrated on one benchmark, kept out of the general defaults.

The general defaults are what the paper gives and what data no preset was fitted on supports. A
rule chosen on the ILP lab (``ilp lab run``) lives here under ``lab``, with the evidence that
chose it, and applies only where a config says ``preset: lab``. A preset fills in values the
config does not set: anything in the YAML file or on the command line wins over it.

``lab``, and why each value belongs to the lab rather than to a user's audit:

- ``detect``: N = 1 on the exact p(correct) with τ = 0.5 ("the model's top option"). The lab's
  items have six fixed options and its scores are compared across seeds, so it decides on the
  expectation instead of five noisy draws; a user's audit keeps the paper's pass@5 < 0.2.
- ``diagnose.corpus.veto``: the corpus decides whether a wrong base answer is a
  belief (II), a guess (I) or a rare pattern (V). In the lab the index holds the *whole*
  pretraining corpus, so a fact it lacks is one the base never read; a real index is a sample of
  the pretraining data, where absence is weak evidence, so the veto is off by default.
- ``diagnose.forgetting.held_evals: 2``: IV needs the sample right at two evaluations in a row.
  The lab states an I fact once; its tiny model flickers right for one evaluation and back, and
  that read as IV. On the Debian world (real data, SmolLM2) the rule left three samples taught six
  times, learned and lost, unattributed, so the default is the paper's "learned, then forgotten".
- ``diagnose.forgetting.exclude_base_known``: not IV when the base already answered it (SFT
  eroding pretrained knowledge). Fitted on the lab's eroded controls; on the Debian world it left
  two forgotten samples unattributed whose trajectories show them learned by their own training.
- ``diagnose.relapse_to_base``: a forgotten sample whose final answer is the base's confident
  belief is II. Fitted on the real-model lab (three II samples read as IV); on the Debian world
  it moved a forgotten sample to II.
- ``diagnose.knowledge_gap.chance_corrected: false``: the raw thresholds (base pass@10 < 0.2,
  BoN-5 < 0.1) the lab was scored with. Among k options they ask for a base below chance, which
  the lab's tiny base, confidently wrong about what it never read, is; the general default
  corrects for chance.
- ``diagnose.beliefs.enabled: off`` (also the default, for cost): II and I read the MC item alone.
  The lab's items carry the world's own alternatives (six values of one relation), so the value the
  tiny base believes is among the options, and the lab was scored that way.
"""

from __future__ import annotations

from typing import Any

DIAGNOSIS_PRESETS: dict[str, dict[str, Any]] = {
    "lab": {
        "corpus": {"veto": True},
        "knowledge_gap": {"chance_corrected": False},
        "forgetting": {"held_evals": 2, "exclude_base_known": True},
        "relapse_to_base": True,
        "beliefs": {"enabled": "off"},
    },
}

AUDIT_PRESETS: dict[str, dict[str, Any]] = {
    "lab": {
        "detect": {"n": 1, "on": "expected", "tau": 0.5},
        "diagnose": {"preset": "lab"},
    },
}

PRESET_NAMES = ("lab",)


def merge_under(preset: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """``data`` on top of ``preset``, recursively: the preset only fills what ``data`` leaves unset."""
    out = dict(preset)
    for k, v in data.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge_under(out[k], v)
        else:
            out[k] = v
    return out


def apply_preset(data: Any, presets: dict[str, dict[str, Any]]) -> Any:
    """A model validator's ``before`` step: merge the named preset under ``data``. An unknown
    name is left for the ``preset`` field's own validation to report."""
    if not isinstance(data, dict) or data.get("preset") not in presets:
        return data
    return merge_under(presets[data["preset"]], data)
