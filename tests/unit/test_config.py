"""Config loading: defaults, overrides, and errors that name the file, line and field."""

from pathlib import Path

import pytest

from ilp_ray.config import AuditConfig, load_config, parse_overrides
from ilp_ray.errors import ConfigError


def write(tmp_path, text):
    p = tmp_path / "audit.yaml"
    p.write_text(text)
    return p


def test_defaults_follow_the_paper(tmp_path):
    cfg = load_config(AuditConfig, write(tmp_path, "data: d.jsonl\nsft_model: m\n"))
    assert (cfg.detect.n, cfg.detect.tau, cfg.detect.top_k, cfg.mc.k) == (5, 0.2, 1000, 4)
    assert cfg.detect.known_threshold == 0.8
    assert cfg.scoring.format == "lm-eval"


def test_cli_overrides_yaml(tmp_path):
    p = write(tmp_path, "data: d.jsonl\nsft_model: m\nscoring:\n  batch_size: 4\n")
    cfg = load_config(AuditConfig, p, parse_overrides(["scoring.batch_size=32", "detect.tau=0.5"]))
    assert cfg.scoring.batch_size == 32 and cfg.detect.tau == 0.5


def test_bad_value_names_file_line_field(tmp_path):
    p = write(tmp_path, "data: d.jsonl\nsft_model: m\nscoring:\n  batch_size: 0\n")
    with pytest.raises(ConfigError) as e:
        load_config(AuditConfig, p)
    assert str(e.value).startswith(f"{p}:4: field 'scoring.batch_size': ")
    assert "greater than or equal to 1" in str(e.value)


def test_unknown_key_suggests(tmp_path):
    p = write(tmp_path, "data: d.jsonl\nsft_model: m\ndetect:\n  tua: 0.3\n")
    with pytest.raises(ConfigError, match=r"audit.yaml:4: field 'detect.tua': unknown key; did you mean 'tau'"):
        load_config(AuditConfig, p)


def test_missing_required_field(tmp_path):
    with pytest.raises(ConfigError, match="field 'sft_model': Field required"):
        load_config(AuditConfig, write(tmp_path, "data: d.jsonl\n"))


def test_bad_yaml_names_line(tmp_path):
    with pytest.raises(ConfigError, match=r"audit.yaml:3: invalid YAML"):
        load_config(AuditConfig, write(tmp_path, "data: d.jsonl\nsft_model: m\n  bad: [\n"))


def test_bad_override_is_named_as_cli(tmp_path):
    p = write(tmp_path, "data: d.jsonl\nsft_model: m\n")
    with pytest.raises(ConfigError, match=r"--set: field 'scoring.format': .*'chat', 'plain' or 'lm-eval'"):
        load_config(AuditConfig, p, parse_overrides(["scoring.format=chatml"]))
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_overrides(["novalue"])


def test_non_mapping_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(AuditConfig, write(tmp_path, "- a\n- b\n"))
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(AuditConfig, tmp_path / "nope.yaml")


def test_evidence_section_is_off_by_default(tmp_path):
    cfg = load_config(AuditConfig, write(tmp_path, "data: d.jsonl\nsft_model: m\n"))
    assert (cfg.evidence.enabled, cfg.evidence.scope, cfg.evidence.index) == (False, "unlearned", None)
    cfg = load_config(AuditConfig, write(tmp_path, "data: d.jsonl\nsft_model: m\nevidence:\n  enabled: true\n"
                                                   "  index: {location: idx}\n  judge: {name: model, model: m2}\n"))
    run = cfg.evidence.run_config("d.jsonl", "out")  # the stage's own config, tracked by the audit
    assert (run.index.location, run.judge.model, run.out, run.tracking.enabled) == ("idx", "m2", "out", False)


@pytest.mark.parametrize(("yaml_tail", "where"), [
    ("evidence:\n  enabled: true\n", r":3: field 'evidence.index': .*required when evidence.enabled is true"),
    ("evidence:\n  enabled: true\n  index: {location: i}\n  judge: {name: rules}\n",
     r":6: field 'evidence.judge.name': .*unknown corpus judge 'rules'.*Did you mean 'rule'\?"),
    ("evidence:\n  enabled: true\n  index: {location: i}\n  judge: {name: model}\n",
     r":6: field 'evidence.judge.model': .*judge 'model' needs judge.model"),
    ("evidence:\n  judge: {name: llm}\n", r":4: field 'evidence.judge.url': .*judge 'llm' needs judge.url"),
    ("evidence:\n  scope: some\n", r":4: field 'evidence.scope': .*'unlearned', 'top_k' or 'all'"),
    ("evidence:\n  index:\n    locaton: i\n", r":5: field 'evidence.index.locaton': unknown key; did you mean 'location'"),
])
def test_bad_evidence_section_names_line_and_field(tmp_path, yaml_tail, where):
    p = write(tmp_path, "data: d.jsonl\nsft_model: m\n" + yaml_tail)
    with pytest.raises(ConfigError, match=where):
        load_config(AuditConfig, p)


def test_deploy_example_loads_with_evidence_off():
    from pathlib import Path

    cfg = load_config(AuditConfig, Path(__file__).resolve().parents[2] / "deploy" / "audit.yaml")
    assert cfg.evidence.enabled is False and cfg.evidence.index.location == "runs/corpus-index"
    assert cfg.evidence.model_dump(exclude={"index"}) == type(cfg.evidence)().model_dump(exclude={"index"})


def test_preset_lab_fills_in_under_the_users_values(tmp_path):
    """preset: lab gives the lab's settings (ilp_ray/presets.py) only where the config is silent."""
    from ilp_ray.config import AuditConfig, load_config

    plain = AuditConfig(data="d.jsonl", sft_model="m")
    assert (plain.detect.n, plain.detect.on, plain.detect.tau) == (5, "sampled", 0.2)  # the paper's
    assert not plain.diagnose.corpus.veto and plain.diagnose.knowledge_gap.chance_corrected
    cfg = tmp_path / "a.yaml"
    cfg.write_text("data: d.jsonl\nsft_model: m\npreset: lab\ndetect:\n  n: 3\n")
    lab = load_config(AuditConfig, cfg, {"diagnose.knowledge_gap.chance_corrected": True})
    assert (lab.detect.n, lab.detect.on, lab.detect.tau) == (3, "expected", 0.5)  # n from the YAML
    assert lab.diagnose.preset == "lab" and lab.diagnose.corpus.veto
    f, pf = lab.diagnose.forgetting, plain.diagnose.forgetting
    assert (f.held_evals, f.exclude_base_known, lab.diagnose.relapse_to_base) == (2, True, True)
    assert (pf.held_evals, pf.exclude_base_known, plain.diagnose.relapse_to_base) == (1, False, False)
    assert lab.diagnose.knowledge_gap.chance_corrected  # the CLI's value wins over the preset
    cfg.write_text("data: d.jsonl\nsft_model: m\npreset: lob\n")
    with pytest.raises(ConfigError) as e:
        load_config(AuditConfig, cfg)
    assert e.value.field == "preset" and e.value.line == 3


def test_the_lab_audits_under_its_preset():
    from ilp_ray.config import AuditConfig
    from ilp_ray.lab.config import LabConfig
    from ilp_ray.lab.run import audit_config

    lab = LabConfig.model_validate({"diagnose": {"conflict": {"theta": 0.9}}})  # a partial section
    a = AuditConfig.model_validate(audit_config(lab, "b", "s", Path("d.jsonl"), None, Path("out")))
    assert (a.detect.n, a.detect.on, a.detect.tau) == (1, "expected", 0.5)
    assert a.diagnose.corpus.veto and not a.diagnose.knowledge_gap.chance_corrected
    assert a.diagnose.conflict.theta == 0.9 and a.diagnose.enabled


def test_corpus_veto_moved_to_the_shared_corpus_section_and_is_read_from_its_old_place():
    from ilp_ray.diagnosis.config import DiagnosisConfig

    assert DiagnosisConfig(corpus={"veto": True}).corpus.veto
    assert DiagnosisConfig(base_conflict={"corpus_veto": True, "tau_c": 0.6}).corpus.veto
    assert DiagnosisConfig(base_conflict={"corpus_veto": True}).base_belief.tau_c == 0.5
    assert not DiagnosisConfig(preset="lab", base_conflict={"corpus_veto": False}).corpus.veto  # the user wins
    assert DiagnosisConfig(preset="lab").corpus.veto


def test_the_belief_thresholds_moved_to_the_shared_base_belief_section_and_are_read_from_their_old_place():
    """I and II read one belief rule (base_belief); II's own section keeps only its score weights."""
    from ilp_ray.diagnosis.config import DiagnosisConfig
    from ilp_ray.errors import ConfigError

    old = DiagnosisConfig(base_conflict={"tau_c": 0.6, "pmi_margin": 1.0, "require_support": False,
                                         "js_threshold": 0.2, "jsd_weight": 0.05})
    b = old.base_belief
    assert (b.tau_c, b.pmi_margin, b.require_support, b.js_threshold) == (0.6, 1.0, False, 0.2)
    assert old.base_conflict.jsd_weight == 0.05 and not hasattr(old.base_conflict, "tau_c")
    both = DiagnosisConfig(base_conflict={"tau_c": 0.6}, base_belief={"tau_c": 0.7})
    assert both.base_belief.tau_c == 0.7  # the new place wins
    with pytest.raises((ConfigError, ValueError), match="tau_c"):
        DiagnosisConfig(base_belief={"tau_c": 1.5})


def test_credentials_over_plain_http_are_warned_of_without_the_secret(tmp_path, caplog):
    """Issue 20, finding 9: a URL with userinfo over http:// is named (file:line or --set, and the
    field) in a warning that does not repeat the password; https:// and plain URLs say nothing."""
    import logging

    from ilp_ray.config import AuditConfig, load_config

    cfg = tmp_path / "a.yaml"
    cfg.write_text("data: d.jsonl\nsft_model: m\ntracking:\n  uri: http://alice:s3cret@mlflow:5000\n")
    with caplog.at_level(logging.WARNING, logger="ilp_ray.config"):
        load_config(AuditConfig, cfg, {"scoring.engine": "http", "scoring.url": "http://bob:pw@serve:8000"})
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 2, msgs
    assert any(m.startswith(f"{cfg}:4: field 'tracking.uri': http://mlflow:5000 carries credentials") for m in msgs)
    assert any(m.startswith("--set: field 'scoring.url': http://serve:8000") for m in msgs)
    assert not any("s3cret" in m or "pw@" in m for m in msgs)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ilp_ray.config"):
        load_config(AuditConfig, None, {"data": "d.jsonl", "sft_model": "m", "tracking.uri": "https://a:b@mlflow",
                                        "scoring.engine": "http", "scoring.url": "http://serve:8000"})
    assert caplog.records == []
