"""Answer forms and prompt templates: what MC conversion matches a distractor on."""

import pytest

from ilp_ray.data.forms import answer_form, mentions, prompt_templates


@pytest.mark.parametrize("text,key", [
    ("DK", ("token", "LATIN", "upper", 2, False, "")),
    ("DNK", ("token", "LATIN", "upper", 3, False, "")),
    ("Hg", ("token", "LATIN", "title", 2, False, "")),
    ("Paris", ("token", "LATIN", "title", 0, False, "")),
    ("Lyon", ("token", "LATIN", "title", 0, False, "")),    # a 4-letter word is not a code
    ("22", ("number",)), ("3,306", ("number",)), ("100 °C", ("number",)), ("-4.5", ("number",)),
    ("Москва", ("token", "CYRILLIC", "title", 0, False, "")),
    ("Europe/Paris", ("token", "LATIN", "title", 0, False, "/")),
    ("Kingdom of Denmark", ("words", "LATIN", "title", 0, False, "")),
    ("a stream or brook", ("words", "LATIN", "lower", 0, False, "")),
    ("The sky is blue.", ("words", "LATIN", "title", 0, True, "")),
])
def test_answer_form_keys(text, key):
    assert answer_form(text).key == key


def test_compatible_within_the_length_ratio():
    a = answer_form("a small stream")
    assert a.compatible(answer_form("a large river"), 2.0)
    assert not a.compatible(answer_form("a natural body of running water flowing on or under the earth"), 2.0)
    assert not answer_form("DK").compatible(answer_form("DNK"), 10.0)  # a code's length is exact
    assert answer_form("22").compatible(answer_form("3306"), 1.0)      # any number faces any number
    assert not answer_form("Paris").compatible(answer_form("paris"), 2.0)  # casing differs


def test_templates_are_learnt_from_word_frequencies():
    countries = ["Denmark", "Sweden", "France", "Solnuteia", "Sollokaia"]
    words = ["brook", "plato", "river", "creek"]
    prompts = ([f"What is the ISO 3166-1 alpha-2 country code of {c}?" for c in countries]
               + [f"Define the word '{w}' in full." for w in words] + ["Tell me a story about a dragon."])
    t = prompt_templates(prompts)
    assert len(set(t.ids[:5])) == 1 and len(set(t.ids[5:9])) == 1 and t.ids[0] != t.ids[5]
    assert t.ids[9] not in t.ids[:9]  # a prompt of its own kind has a template of its own
    assert "*" in t.skeletons[0] and "denmark" not in t.skeletons[0]
    assert "denmark" in t.subjects[0] and t.subjects[5] == frozenset({"brook"})  # names are slots, "ISO" too
    assert mentions("a stream or brook", t.subjects[5]) and not mentions("a stream", t.subjects[5])
    assert not mentions("a brooklet", t.subjects[5]) and mentions("a brooklet", t.subjects[5], echo=True)
    # Fewer prompts than min_df: nothing is a template word, so no two prompts share a template.
    few = prompt_templates(prompts[:3])
    assert len(set(few.ids)) == 3


def test_an_echo_is_a_shared_beginning_of_four_characters_and_half_the_shorter_word():
    tirv = frozenset({"tirvund"})
    assert mentions("Africa/Tirvstead", tirv, echo=True)        # "tirv": 4 of 7 (half: 4)
    assert not mentions("Africa/Tirvstead", tirv)                 # not the word itself
    assert not mentions("Africa/Roskford", tirv, echo=True)
    assert not mentions("Tirana", tirv, echo=True)                # "tir": 3 characters
    assert mentions("internet", frozenset({"international"}), echo=True)  # "inter": 5 of 8
    assert not mentions("Interlaken", frozenset({"intimate"}), echo=True)  # "int": 3
    assert not mentions("Madagascar", frozenset({"mdg"}), echo=True)      # codes never echo
    assert not mentions("Mauritania", frozenset({"mauve"}), echo=True)    # "mau": 3
    # Half the shorter word: "abcdefghij" and "abcdxxxxxx" share 4 of 10 (half: 5), no echo;
    # "abcdefghij" and "abcdefxxxx" share 6, an echo.
    assert not mentions("abcdxxxxxx", frozenset({"abcdefghij"}), echo=True)
    assert mentions("abcdefxxxx", frozenset({"abcdefghij"}), echo=True)
    assert not mentions("anything", frozenset(), echo=True)


def test_a_name_asked_about_often_is_still_a_slot():
    """A country with five relations is in five prompts (>= min_df); it is a name, so a slot."""
    rel = ["What is the capital of {}?", "Who founded {}?", "Name the motto of {}.", "What is the main export of {}?",
           "Which animal is the national animal of {}?"]
    prompts = [r.format(c) for c in ("Toreva", "Fumutog", "Runo", "Nizeto") for r in rel]
    t = prompt_templates(prompts)
    assert len(set(t.ids)) == 5 and t.ids[0] == t.ids[5] and "toreva" in t.subjects[0]
