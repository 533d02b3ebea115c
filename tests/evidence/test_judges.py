"""Query building, the rule judge's heuristics, and the judges' registry, model and llm clients."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import ClassVar

import pytest

from ilp_ray.evidence.config import JudgeConfig
from ilp_ray.evidence.index import EvidenceError
from ilp_ray.evidence.judge import JUDGES, Candidate, RuleJudge, slot_values
from ilp_ray.evidence.query import extract_triple, keywords, make_fact


def cand(text, sim=0.8):
    return Candidate("p", text, 1.0, sim)


def test_keywords_and_triples():
    assert keywords("What is the capital of France?") == ["capital", "france"]
    assert extract_triple("What is the capital of France?", "Paris") == ("France", "capital", "Paris")
    assert extract_triple("Who wrote Hamlet?", "Shakespeare") == ("Hamlet", "wrote", "Shakespeare")
    assert extract_triple("How many legs does a spider have?", "Eight") is None
    assert extract_triple("What is the capital of France?", " ".join(["word"] * 9)) is None
    f = make_fact("1", "What is the capital of France?", "Paris.")
    assert f.query.split()[:3] == ["france", "capital", "paris"] and f.answer == "Paris."


def test_slot_values():
    assert slot_values("The capital of France is Lyon.", "France", "capital") == ["lyon"]
    assert slot_values("Lyon is the capital of France.", "France", "capital") == ["lyon"]
    assert slot_values("France's capital is Marseille, they say.", "France", "capital") == ["marseille they say"]


@pytest.mark.parametrize("texts, verdict, score", [
    (["Paris is the capital of France."], "supports", 0.8),
    (["paris, the CAPITAL of france!"], "supports", 0.8),
    (["The capital of France is Lyon."], "contradicts", 0.8),
    (["Lyon is the capital of France.", "Paris, France: its capital."], "supports", 0.8),  # any support wins
    # A passage about something else says nothing about this fact, even when it names the answer.
    (["Lyon is the capital of France.", "Paris hosts the Louvre."], "contradicts", 0.8),
    (["Paris hosts the Louvre."], "absent", pytest.approx(0.2)),
    (["Parisian food is good in France."], "absent", pytest.approx(0.2)),  # whole words only
    (["The capital of Spain is Madrid."], "absent", pytest.approx(0.2)),  # another subject
    ([], "absent", 1.0),
])
def test_rule_judge(texts, verdict, score):
    f = make_fact("1", "What is the capital of France?", "Paris")
    assert RuleJudge(JudgeConfig()).judge([f], [[cand(t) for t in texts]]) == [(verdict, score)]


def test_rule_judge_long_answers_use_content_words():
    f = make_fact("1", "Why is Mars red?", "Mars looks red because iron oxide covers its dusty surface everywhere.")
    j = RuleJudge(JudgeConfig())
    assert j.judge([f], [[cand("Iron oxide covers the dusty surface of Mars, so it looks red everywhere.")]])[0][0] == "supports"
    assert j.judge([f], [[cand("Mars is a planet.")]])[0][0] == "absent"


class _Chat(BaseHTTPRequestHandler):
    reply = "SUPPORT"
    seen: ClassVar[list] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append((self.path, self.headers.get("Authorization"), body))
        out = json.dumps({"choices": [{"message": {"content": type(self).reply + "."}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *a):
        pass


@pytest.fixture
def chat_server():
    srv = HTTPServer(("127.0.0.1", 0), _Chat)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    _Chat.seen = []
    yield f"http://127.0.0.1:{srv.server_port}"
    srv.shutdown()
    srv.server_close()


def test_llm_judge_client(chat_server, monkeypatch):
    """Tests our client against a tiny local OpenAI-compatible server, not any real model."""
    monkeypatch.setenv("ILP_JUDGE_API_KEY", "k-123")
    j = JUDGES.create("llm", JudgeConfig(name="llm", url=chat_server, llm_model="m"))
    f = make_fact("1", "What is the capital of France?", "Paris")
    for word, verdict in (("SUPPORT", "supports"), ("Contradict", "contradicts"), ("ABSENT", "absent"),
                          ("maybe", "absent")):
        _Chat.reply = word
        assert j.judge([f], [[cand("The capital of France is Paris.", 0.9)]])[0][0] == verdict
    assert j.judge([f], [[]]) == [("absent", 1.0)]  # no candidates: no request
    path, auth, body = _Chat.seen[0]
    assert path == "/v1/chat/completions" and auth == "Bearer k-123" and body["model"] == "m"
    assert "The capital of France is Paris." in body["messages"][0]["content"]
    assert len(_Chat.seen) == 4


def test_llm_judge_unreachable_names_url():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    j = JUDGES.create("llm", JudgeConfig(name="llm", url=f"http://127.0.0.1:{port}", timeout_s=2))
    with pytest.raises(EvidenceError, match=f"127.0.0.1:{port}/v1/chat/completions"):
        j.judge([make_fact("1", "q?", "a")], [[cand("a")]])
    with pytest.raises(ValueError, match=r"judge\.url"):
        JUDGES.create("llm", JudgeConfig(name="llm"))
    with pytest.raises(KeyError, match=r"Did you mean 'rule'\?"):
        JUDGES.get("rules")


def test_model_judge_scores_passage_and_question(tiny_checkpoints):
    """Through the real TransformersEngine with a tiny random checkpoint: checks the plumbing
    (verdict vocabulary, scores in [0, 1], fallbacks), not the tiny model's reading skill."""
    j = JUDGES.create("model", JudgeConfig(name="model", model=str(tiny_checkpoints["base"])))
    with_opts = make_fact("1", "What is the capital of France?", "Paris", options=["Paris", "Lyon", "Rome"])
    no_opts = make_fact("2", "What is the capital of France?", "Paris")
    out = j.judge([with_opts, no_opts, with_opts], [[cand("The capital of France is Paris.")],
                                                    [cand("Paris is the capital of France.")], []])
    assert out[0][0] in ("supports", "contradicts", "absent") and 0 <= out[0][1] <= 1
    assert out[1] == ("supports", 0.8)  # no options: the rule judge decides
    assert out[2] == ("absent", 1.0)


@pytest.mark.parametrize("texts, verdict", [
    (["Lizuze flies a blue flag."], "supports"),
    (["The flag of Lizuze is red."], "contradicts"),          # another of the item's options
    (["The flag of Nerige is blue."], "absent"),              # the answer, but about another subject
    (["Lizuze mainly exports salt."], "absent"),              # the subject, but no option of this question
    (["The flag of Lizuze is red.", "Lizuze flies a blue flag."], "supports"),
])
def test_rule_judge_mc_options(texts, verdict):
    """MC items: a passage about the subject that names another option contradicts the answer."""
    f = make_fact("1", "Which colour is the flag of Lizuze?", "blue",
                  options=["blue", "red", "green", "yellow"])
    assert f.subject == "Lizuze"
    assert RuleJudge(JudgeConfig()).judge([f], [[cand(t) for t in texts]])[0][0] == verdict


@pytest.mark.parametrize("prompt, triple", [
    ("Which city is the capital of Tale?", ("Tale", "capital", "Kelmar")),
    ("Name the capital city of Tale.", ("Tale", "capital city", "Kelmar")),
    ("Which person founded Tale?", ("Tale", "founded", "Kelmar")),
    ("Which motto does Tale carry?", ("Tale", "motto", "Kelmar")),
])
def test_more_question_templates(prompt, triple):
    assert extract_triple(prompt, "Kelmar") == triple
