"""Tests for steps.data.grammar: German agreement, sentence properties, QA answerability and determinism."""

import itertools
import random
import re

import pytest

from steps.data import grammar as g


def _noun(en: str) -> g.Noun:
    return next(n for n in g.NOUNS if n.en_sg == en)


def _adj(en: str) -> g.Adjective:
    return next(a for a in g.ADJECTIVES if a.en == en)


def _verb(en: str) -> g.Verb:
    return next(v for v in (*g.TRANSITIVE_VERBS, *g.DITRANSITIVE_VERBS, *g.INTRANSITIVE_VERBS, g.BE) if v.en == en)


def _place(en: str) -> g.Place:
    return next(p for p in g.PLACES if p.noun.en_sg == en)


def _time(key: str) -> g.TimePhrase:
    return next(t for t in g.TIMES if t.key == key)


def _name(text: str) -> g.Name:
    return next(n for n in g.NAMES if n.text == text)


def _pronoun(en: str) -> g.Subject:
    return next(p for p in g.PRONOUNS if p.en == en)


def _translations(seed: int, n: int) -> list[g.TranslationPair]:
    rng = random.Random(seed)
    return [g.sample_translation(rng) for _ in range(n)]


def _qa_drafts(seed: int, n: int) -> list:
    rng = random.Random(seed)
    return [g._sample_qa_draft(rng) for _ in range(n)]


# Sampled once per session: the property tests below all read these.
@pytest.fixture(scope="module")
def pairs() -> list[g.TranslationPair]:
    return _translations(seed=11, n=3000)


@pytest.fixture(scope="module")
def drafts() -> list:
    return _qa_drafts(seed=12, n=3000)


# --- determinism ------------------------------------------------------------------------------------------------------


def test_same_seed_same_samples_and_different_seed_differs() -> None:
    def draw(seed: int) -> list:
        rng = random.Random(seed)
        return [(g.sample_translation(rng), g.sample_qa(rng)) for _ in range(50)]

    assert draw(7) == draw(7)
    assert draw(7) != draw(8)


def test_sample_qa_is_the_draft_item() -> None:
    rng = random.Random(3)
    assert [g.sample_qa(rng) for _ in range(30)] == [d.item for d in _qa_drafts(3, 30)]


# --- German noun phrases ----------------------------------------------------------------------------------------------

NP_CASES = [
    # (noun, det, plural, number, adjective, case, expected)
    ("man", "the", False, 0, "old", "nom", "der alte Mann"),
    ("man", "the", False, 0, "old", "acc", "den alten Mann"),
    ("man", "the", False, 0, "old", "dat", "dem alten Mann"),
    ("man", "the", True, 0, "old", "nom", "die alten Männer"),
    ("man", "the", True, 0, "old", "dat", "den alten Männern"),
    ("man", "a", False, 0, "old", "nom", "ein alter Mann"),
    ("man", "a", False, 0, "old", "acc", "einen alten Mann"),
    ("man", "a", False, 0, "old", "dat", "einem alten Mann"),
    ("woman", "the", False, 0, "young", "nom", "die junge Frau"),
    ("woman", "the", False, 0, "young", "dat", "der jungen Frau"),
    ("woman", "a", False, 0, "young", "acc", "eine junge Frau"),
    ("woman", "a", False, 0, "young", "dat", "einer jungen Frau"),
    ("book", "the", False, 0, "new", "acc", "das neue Buch"),
    ("book", "a", False, 0, "new", "nom", "ein neues Buch"),
    ("book", "a", False, 0, "new", "acc", "ein neues Buch"),
    ("child", "a", False, 0, "small", "dat", "einem kleinen Kind"),
    ("dog", "my", False, 0, "black", "acc", "meinen schwarzen Hund"),
    ("cat", "my", False, 0, None, "dat", "meiner Katze"),
    ("dog", "my", True, 3, "small", "nom", "meine drei kleinen Hunde"),
    ("dog", "my", True, 0, None, "dat", "meinen Hunden"),
    ("apple", "", True, 3, "red", "nom", "drei rote Äpfel"),
    ("apple", "", True, 3, "red", "acc", "drei rote Äpfel"),
    ("apple", "", True, 3, "red", "dat", "drei roten Äpfeln"),
    ("apple", "the", True, 3, "red", "acc", "die drei roten Äpfel"),
    ("book", "", True, 0, None, "acc", "Bücher"),
    ("child", "", True, 5, None, "dat", "fünf Kindern"),
    ("cat", "", True, 2, None, "dat", "zwei Katzen"),  # plural already ends in -n
    ("car", "the", True, 0, None, "dat", "den Autos"),  # -s plurals take no dative -n
    ("girl", "the", True, 0, None, "dat", "den Mädchen"),
    ("key", "the", True, 0, None, "dat", "den Schlüsseln"),
]


@pytest.mark.parametrize(("noun", "det", "plural", "number", "adj", "case", "expected"), NP_CASES)
def test_german_noun_phrase_agreement(
    noun: str, det: str, plural: bool, number: int, adj: str | None, case: str, expected: str
) -> None:
    np = g.NounPhrase(_noun(noun), det, plural, number, _adj(adj) if adj else None)
    assert g.german_np(np, case) == expected


@pytest.mark.parametrize(
    ("noun", "det", "plural", "number", "adj", "expected"),
    [
        ("man", "a", False, 0, "old", "an old man"),
        ("egg", "a", False, 0, None, "an egg"),
        ("orange", "a", False, 0, None, "an orange"),
        ("apple", "a", False, 0, "red", "a red apple"),
        ("child", "the", True, 0, None, "the children"),
        ("man", "", True, 3, None, "three men"),
        ("woman", "my", True, 2, "young", "my two young women"),
    ],
)
def test_english_noun_phrase(noun: str, det: str, plural: bool, number: int, adj: str | None, expected: str) -> None:
    assert g.english_np(g.NounPhrase(_noun(noun), det, plural, number, _adj(adj) if adj else None)) == expected


@pytest.mark.parametrize(
    ("det", "plural", "number"), [("a", True, 0), ("", False, 0), ("the", False, 3), ("x", False, 0)]
)
def test_noun_phrase_rejects_ungrammatical_shapes(det: str, plural: bool, number: int) -> None:
    with pytest.raises(ValueError):
        g.NounPhrase(_noun("dog"), det, plural, number)


# --- German verbs and contractions ------------------------------------------------------------------------------------

VERB_FORMS = {
    "read": ("lese", "liest", "liest", "lesen", "lest", "lesen"),
    "eat": ("esse", "isst", "isst", "essen", "esst", "essen"),
    "see": ("sehe", "siehst", "sieht", "sehen", "seht", "sehen"),
    "take": ("nehme", "nimmst", "nimmt", "nehmen", "nehmt", "nehmen"),
    "give": ("gebe", "gibst", "gibt", "geben", "gebt", "geben"),
    "carry": ("trage", "trägst", "trägt", "tragen", "tragt", "tragen"),
    "wash": ("wasche", "wäschst", "wäscht", "waschen", "wascht", "waschen"),
    "sleep": ("schlafe", "schläfst", "schläft", "schlafen", "schlaft", "schlafen"),
    "find": ("finde", "findest", "findet", "finden", "findet", "finden"),
    "wait": ("warte", "wartest", "wartet", "warten", "wartet", "warten"),
    "work": ("arbeite", "arbeitest", "arbeitet", "arbeiten", "arbeitet", "arbeiten"),
    "sit": ("sitze", "sitzt", "sitzt", "sitzen", "sitzt", "sitzen"),
    "buy": ("kaufe", "kaufst", "kauft", "kaufen", "kauft", "kaufen"),
    "have": ("habe", "hast", "hat", "haben", "habt", "haben"),
    "are": ("bin", "bist", "ist", "sind", "seid", "sind"),
}


@pytest.mark.parametrize("verb", sorted(VERB_FORMS))
def test_german_conjugation(verb: str) -> None:
    assert tuple(_verb(verb).de_form(p) for p in g.PERSONS) == VERB_FORMS[verb]


def test_english_agreement_forms() -> None:
    assert [_verb("carry").en_form(p) for p in ("1sg", "3sg", "3pl")] == ["carry", "carries", "carry"]
    assert [g.BE.en_form(p) for p in ("1sg", "3sg", "1pl")] == ["am", "is", "are"]


@pytest.mark.parametrize(
    ("place", "adj", "en", "de"),
    [
        ("garden", None, "in the garden", "im Garten"),
        ("garden", "big", "in the big garden", "im großen Garten"),
        ("house", None, "in the house", "im Haus"),
        ("station", None, "at the station", "am Bahnhof"),
        ("lake", "small", "at the small lake", "am kleinen See"),
        ("kitchen", None, "in the kitchen", "in der Küche"),
        ("market", None, "at the market", "auf dem Markt"),
        ("table", None, "on the table", "auf dem Tisch"),
        ("street", "old", "on the old street", "auf der alten Straße"),
    ],
)
def test_place_phrases_contract_dative_article(place: str, adj: str | None, en: str, de: str) -> None:
    assert g.place_phrase(g.PlaceRef(_place(place), _adj(adj) if adj else None)) == (en, de)


# --- whole clauses ----------------------------------------------------------------------------------------------------


OLD_MAN = g.np_subject(g.NounPhrase(_noun("man"), "the", False, adj=_adj("old")))
A_BOOK = g.NounPhrase(_noun("book"), "a", False)

CLAUSES = [
    (
        g.Clause(OLD_MAN, _verb("read"), A_BOOK, time=_time("evening")),
        "The old man reads a book in the evening.",
        "Der alte Mann liest am Abend ein Buch.",
    ),
    (
        g.Clause(OLD_MAN, _verb("read"), A_BOOK, time=_time("evening"), time_first=True),
        "In the evening the old man reads a book.",
        "Am Abend liest der alte Mann ein Buch.",
    ),
    (
        g.Clause(
            g.name_subject(_name("Anna")),
            _verb("buy"),
            g.NounPhrase(_noun("apple"), "", True, 3, _adj("red")),
            place=g.PlaceRef(_place("market")),
            time=_time("monday"),
            time_first=True,
        ),
        "On Monday Anna buys three red apples at the market.",
        "Am Montag kauft Anna drei rote Äpfel auf dem Markt.",
    ),
    (
        g.Clause(
            _pronoun("she"),
            _verb("give"),
            g.NounPhrase(_noun("bag"), "a", False, adj=_adj("new")),
            recipient=g.NounPhrase(_noun("teacher"), "the", False),
        ),
        "She gives the teacher a new bag.",
        "Sie gibt dem Lehrer eine neue Tasche.",
    ),
    (
        g.Clause(
            _pronoun("we"),
            _verb("play"),
            companion=g.NounPhrase(_noun("dog"), "", True, 3, _adj("small")),
            place=g.PlaceRef(_place("park")),
            time=_time("today"),
            time_first=True,
        ),
        "Today we play with three small dogs in the park.",
        "Heute spielen wir mit drei kleinen Hunden im Park.",
    ),
    (
        g.Clause(_pronoun("I"), g.BE, place=g.PlaceRef(_place("station")), time=_time("night")),
        "I am at the station at night.",
        "Ich bin in der Nacht am Bahnhof.",
    ),
    (
        g.Clause(
            g.np_subject(g.NounPhrase(_noun("child"), "the", True)),
            _verb("eat"),
            g.NounPhrase(_noun("egg"), "a", False),
        ),
        "The children eat an egg.",
        "Die Kinder essen ein Ei.",
    ),
]


@pytest.mark.parametrize(("clause", "en", "de"), CLAUSES)
def test_render_hand_built_clauses(clause: g.Clause, en: str, de: str) -> None:
    assert g.render(clause) == g.TranslationPair(en, de)


# --- properties of sampled translations -------------------------------------------------------------------------------


def test_at_least_5000_distinct_pairs_reachable() -> None:
    assert len(set(_translations(seed=0, n=8000))) >= 5000


def test_sentences_are_well_formed(pairs: list[g.TranslationPair]) -> None:
    for pair in pairs:
        for text in (pair.en, pair.de):
            assert text.endswith(".") and text.count(".") == 1, text
            assert text[0].isupper(), text
            assert "  " not in text, text
        assert 4 <= len(pair.en.split()) <= 12, pair.en
        assert not re.search(r"\b(in|an) dem\b", pair.de), pair.de


def test_sentence_lengths_are_typically_six_to_nine(pairs: list[g.TranslationPair]) -> None:
    lengths = sorted(len(p.en.split()) for p in pairs)
    assert 6 <= lengths[len(lengths) // 2] <= 9


def test_english_subject_verb_agreement(pairs: list[g.TranslationPair]) -> None:
    verbs = (*g.TRANSITIVE_VERBS, *g.DITRANSITIVE_VERBS, *g.INTRANSITIVE_VERBS, g.BE)
    third = {v.en_3sg for v in verbs}
    plain = {v.en for v in verbs} | {"am"}
    checked = 0
    for pair in pairs:
        tokens = g.words(pair.en)
        for pronoun, verb in itertools.pairwise(tokens):
            if pronoun in ("he", "she"):
                assert verb in third, pair.en
                checked += 1
            elif pronoun in ("i", "we", "they"):
                assert verb in plain, pair.en
                checked += 1
    assert checked > 300


def test_german_pronoun_subjects_agree(pairs: list[g.TranslationPair]) -> None:
    # Pronoun + verb or verb + pronoun (after a fronted time phrase) must use that person's form.
    verbs = (*g.TRANSITIVE_VERBS, *g.DITRANSITIVE_VERBS, *g.INTRANSITIVE_VERBS, g.BE)
    forms = {p: {v.de_form(p) for v in verbs} for p in g.PERSONS}
    person_of = {"ich": "1sg", "wir": "1pl", "er": "3sg"}
    for pair in pairs:
        tokens = g.words(pair.de)
        for i, token in enumerate(tokens):
            if token in person_of:
                neighbours = {tokens[i - 1] if i else "", tokens[i + 1] if i + 1 < len(tokens) else ""}
                assert neighbours & forms[person_of[token]], pair.de


# --- spoken QA --------------------------------------------------------------------------------------------------------


def test_every_kind_appears_roughly_uniformly(drafts: list) -> None:
    counts = {k: sum(d.item.kind == k for d in drafts) for k in g.QUESTION_KINDS}
    assert set(counts) == set(g.QUESTION_KINDS)
    assert min(counts.values()) > len(drafts) / len(g.QUESTION_KINDS) * 0.8, counts


def test_each_kind_uses_at_least_three_phrasings(drafts: list) -> None:
    for kind in g.QUESTION_KINDS:
        used = {d.template for d in drafts if d.item.kind == kind}
        assert len(used) >= 3, kind
        assert used <= set(g.QUESTION_TEMPLATES[kind])


def test_items_are_well_formed(drafts: list) -> None:
    for d in drafts:
        item = d.item
        assert item.kind in g.QUESTION_KINDS
        assert 1 <= item.passage.count(".") <= 2, item.passage
        assert item.question.endswith("?") and item.question[0].isupper(), item.question
        assert item.answer.endswith(".") and item.answer[0].isupper(), item.answer
        assert "  " not in item.question + item.answer + item.passage


def test_answers_come_from_the_passage_not_the_question(drafts: list) -> None:
    for d in drafts:
        if d.item.kind == "yes_no":
            continue
        assert d.key in g.words(d.item.passage), d
        assert d.key in g.words(d.item.answer), d
        assert d.key not in g.words(d.item.question), d


def test_yes_no_answers_are_correct_and_balanced(drafts: list) -> None:
    yes_no = [d for d in drafts if d.item.kind == "yes_no"]
    for d in yes_no:
        assert d.item.answer.startswith(("Yes", "No")), d
        # The probed word is in the passage exactly when the claim is true.
        assert d.item.answer.startswith("Yes") == (d.key in g.words(d.item.passage)), d
        assert d.key in g.words(d.item.question), d
    share_yes = sum(d.item.answer.startswith("Yes") for d in yes_no) / len(yes_no)
    assert 0.4 < share_yes < 0.6


def test_who_questions_need_the_passage(drafts: list) -> None:
    # Several names are possible, so the question text alone cannot give the answer away.
    answers = {d.key for d in drafts if d.item.kind == "who"}
    assert len(answers) == len(g.NAMES)


def test_answers_vary_between_phrase_and_sentence(drafts: list) -> None:
    finite = {v.en_3sg for v in g.TRANSITIVE_VERBS} | {"is", "does"}
    for kind in g.QUESTION_KINDS:
        forms = {bool(finite & set(g.words(d.item.answer))) for d in drafts if d.item.kind == kind}
        assert forms == {True, False}, kind  # both bare phrases and full sentences occur


def _event() -> g._Event:
    apples = g.NounPhrase(_noun("apple"), "", True, 3, _adj("red"))
    return g._Event(_name("Anna"), _verb("buy"), apples, g.PlaceRef(_place("market")), _time("monday"))


EXPECTED_ANSWERS = {
    "who": {"Anna.", "Anna does.", "Anna buys them."},
    "what": {"Three red apples.", "She buys three red apples.", "Anna buys three red apples."},
    "where": {"At the market.", "She buys them at the market.", "Anna is at the market."},
    "when": {"On Monday.", "She buys them on Monday.", "Anna buys the apples on Monday."},
    "how_many": {"Three.", "Three apples.", "She buys three red apples."},
}


@pytest.mark.parametrize("kind", sorted(EXPECTED_ANSWERS))
def test_hand_picked_event_answers(kind: str) -> None:
    passages = {
        "On Monday Anna buys three red apples at the market.",
        "Anna buys three red apples at the market on Monday.",
    }
    seen = set()
    for seed in range(40):
        item = g._build_draft(random.Random(seed), kind, "single", _event(), None).item
        assert item.passage in passages
        assert item.answer in EXPECTED_ANSWERS[kind], item
        seen.add(item.answer)
    assert seen == EXPECTED_ANSWERS[kind]


def test_hand_picked_yes_no() -> None:
    for seed in range(60):
        d = g._build_draft(random.Random(seed), "yes_no", "located", _event(), None)
        q, a = d.item.question, d.item.answer
        assert "Anna is at the market" in d.item.passage
        if a.startswith("Yes"):
            assert a in {"Yes.", "Yes, she does.", "Yes, Anna buys three red apples."}
        else:
            assert a in {
                "No.",
                "No, she does not.",
                "No, he does not.",
                "No, she buys three red apples.",
                "No, Anna buys them.",
                "No, she buys them at the market.",
                "No, she buys them on Monday.",
            }, a
            assert d.key not in g.words(d.item.passage)
        assert q.endswith("?")


def test_two_person_passages_ask_about_one_of_them(drafts: list) -> None:
    pairs_ = [d for d in drafts if sum(n.text in d.item.passage for n in g.NAMES) == 2]
    assert len(pairs_) > 300
    for d in pairs_:
        if d.item.kind == "who":
            assert d.key in g.words(d.item.passage)


# --- vocabulary -------------------------------------------------------------------------------------------------------


def test_vocabulary_covers_everything_emitted(pairs: list[g.TranslationPair], drafts: list) -> None:
    english, german = g.vocabulary()
    for pair in pairs[:2000]:
        assert set(g.words(pair.en)) <= english, pair.en
        assert set(g.words(pair.de)) <= german, pair.de
    for d in drafts[:2000]:
        item = d.item
        assert set(g.words(f"{item.passage} {item.question} {item.answer}")) <= english, item


def test_spoken_words_are_shared_between_tasks(pairs: list[g.TranslationPair], drafts: list) -> None:
    spoken = g.spoken_vocabulary()
    assert all(set(g.words(p.en)) <= spoken for p in pairs)
    assert all(set(g.words(d.item.passage)) <= spoken for d in drafts)
    assert 100 <= len(spoken) <= 180


def test_vocabulary_is_lower_case_words() -> None:
    for vocab in g.vocabulary():
        assert all(w == w.lower() and re.fullmatch(r"[^\W\d_]+", w) for w in vocab)
