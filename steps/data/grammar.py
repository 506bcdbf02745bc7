"""Small bilingual grammar that generates the text behind the synthetic spoken corpus.

Two generators share one compact lexicon, so that a tiny speech model can learn every spoken word from audio:

* ``sample_translation`` draws an English sentence and its German translation (the speech-translation task).
  German agreement is handled for every word the grammar uses: noun gender and explicit plurals, nominative /
  accusative / dative case, weak / mixed / strong adjective endings, stem-changing verbs, verb-second order after a
  fronted time phrase, and the contractions ``im`` / ``am``.
* ``sample_qa`` draws a LibriSQA-style item: a one- or two-sentence English passage (the part that is spoken), a text
  question of one of ``QUESTION_KINDS`` and a short free-form reference answer that only the passage supports.

Everything is driven by the ``random.Random`` handed in, so a seed fixes the corpus. Nothing random happens at
import time; the module only defines constant tables and functions.
"""

import random
import re
from dataclasses import dataclass, replace

# --- Public record types ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TranslationPair:
    """An English sentence and its German translation."""

    en: str  # capitalised, ends with "."
    de: str


@dataclass(frozen=True)
class QAItem:
    """A spoken passage, a text question about it and an open-format reference answer."""

    passage: str
    question: str
    answer: str
    kind: str  # one of QUESTION_KINDS


QUESTION_KINDS: tuple[str, ...] = ("who", "what", "where", "when", "how_many", "yes_no")

# --- Lexicon types ----------------------------------------------------------------------------------------------------

PERSONS: tuple[str, ...] = ("1sg", "2sg", "3sg", "1pl", "2pl", "3pl")


@dataclass(frozen=True)
class Noun:
    """A countable noun with explicit plurals in both languages."""

    en_sg: str
    en_pl: str
    de_sg: str
    de_pl: str
    gender: str  # German grammatical gender: "m", "f" or "n"
    category: str  # semantic class that verbs and adjectives select on

    def de_form(self, plural: bool, case: str) -> str:
        if not plural:
            return self.de_sg  # modern German drops the old dative singular -e (im Haus, not im Hause)
        if case == "dat" and not self.de_pl.endswith(("n", "s")):
            return self.de_pl + "n"  # dative plural takes -n unless it already ends in -n/-s: Äpfeln, but Autos
        return self.de_pl


@dataclass(frozen=True)
class Adjective:
    """An attributive adjective; ``de`` is the stem that receives the declension ending."""

    en: str
    de: str
    categories: tuple[str, ...]  # noun categories it sounds plausible with


@dataclass(frozen=True)
class Verb:
    """A verb with its English forms and enough German to conjugate it in the present tense."""

    en: str  # base form (I/we/they read)
    en_3sg: str
    de_inf: str
    subjects: tuple[str, ...]  # noun categories allowed as subject
    objects: tuple[str, ...] = ()  # noun categories allowed as direct object; empty means intransitive
    de_changed: str = ""  # vowel-changed stem used for du/er-sie-es (lies, nimm, träg); empty if regular
    de_irregular: tuple[str, ...] = ()  # all six forms in PERSONS order, for haben/sein
    en_1sg: str = ""  # only "am" needs it
    en_ing: str = ""  # set only for verbs that QA items use (question templates need the -ing form)
    ditransitive: bool = False  # takes a dative recipient before the object (geben)
    companion: bool = True  # intransitive verbs only: False where "with someone" changes the meaning (sleep)
    timed: bool = True  # False where a time phrase reads oddly ("has a dog on Monday")

    def en_form(self, person: str) -> str:
        if person == "3sg":
            return self.en_3sg
        if person == "1sg" and self.en_1sg:
            return self.en_1sg
        return self.en

    def de_form(self, person: str) -> str:
        if self.de_irregular:
            return self.de_irregular[PERSONS.index(person)]
        stem = self.de_inf[:-2]
        # du/er take the changed stem, and German never inserts -e- after a changed stem, so only regular stems do
        singular = self.de_changed or stem
        regular = not self.de_changed
        forms = {
            "1sg": stem + "e",
            "2sg": _attach(singular, "st", epenthesis=regular),
            "3sg": _attach(singular, "t", epenthesis=regular),
            "1pl": self.de_inf,
            "2pl": _attach(stem, "t", epenthesis=True),
            "3pl": self.de_inf,
        }
        return forms[person]


def _attach(stem: str, ending: str, *, epenthesis: bool) -> str:
    """Glue a present-tense ending to a verb stem with German's two sound rules."""
    if epenthesis and stem.endswith(("t", "d")):
        return stem + "e" + ending  # findest, wartet: the -e- keeps the ending audible after t/d
    if ending == "st" and stem.endswith(("s", "ß", "z", "x")):
        return stem + "t"  # liest, isst, sitzt: the s of -st merges into the stem's sibilant
    return stem + ending


@dataclass(frozen=True)
class Place:
    """A location noun with the prepositions both languages use for being there (German takes the dative)."""

    noun: Noun
    en_prep: str
    de_prep: str
    animate: bool = True  # False where people and animals would not plausibly be ("on the table")


@dataclass(frozen=True)
class TimePhrase:
    """A fixed time adverbial; ``key`` is its distinctive word and ``group`` the set it contrasts with."""

    en: str
    de: str
    key: str
    group: str  # "part" (of the day), "day" (of the week) or "today"


@dataclass(frozen=True)
class Name:
    """A first name (identical in both languages) and the English pronoun that refers back to it."""

    text: str
    pronoun: str  # "he" or "she"


@dataclass(frozen=True)
class Subject:
    """A rendered sentence subject and the person it makes the verb agree with."""

    en: str
    de: str
    person: str  # one of PERSONS


@dataclass(frozen=True)
class NounPhrase:
    """Determiner + optional numeral + optional adjective + noun.

    ``det`` is "the", "a", "my" or "" (no article, plural only). ``number`` is 0 or 2..9 and implies ``plural``.
    """

    noun: Noun
    det: str
    plural: bool
    number: int = 0
    adj: Adjective | None = None

    def __post_init__(self) -> None:
        if self.det not in ("the", "a", "my", ""):
            raise ValueError(f"unknown determiner {self.det!r}")
        if self.det == "a" and self.plural:
            raise ValueError("'a' needs a singular noun")
        if self.det == "" and not self.plural:
            raise ValueError("a noun without article must be plural")
        if self.number and not self.plural:
            raise ValueError("a numeral needs a plural noun")


@dataclass(frozen=True)
class PlaceRef:
    """A place as used in a sentence: always definite singular, optionally with an adjective."""

    place: Place
    adj: Adjective | None = None


@dataclass(frozen=True)
class Clause:
    """One present-tense main clause; ``render`` turns it into both languages."""

    subject: Subject
    verb: Verb
    obj: NounPhrase | None = None
    recipient: NounPhrase | None = None  # dative indirect object of a ditransitive verb
    companion: NounPhrase | None = None  # "with ..." / "mit ..." (dative)
    place: PlaceRef | None = None
    time: TimePhrase | None = None
    time_first: bool = False  # put the time phrase first (German then inverts verb and subject)


# --- Lexicon tables ---------------------------------------------------------------------------------------------------

_ANIMATE = ("person", "animal")
_CONCRETE = ("animal", "food", "text", "thing", "vehicle")

NOUNS: tuple[Noun, ...] = (
    Noun("man", "men", "Mann", "Männer", "m", "person"),
    Noun("woman", "women", "Frau", "Frauen", "f", "person"),
    Noun("child", "children", "Kind", "Kinder", "n", "person"),
    Noun("girl", "girls", "Mädchen", "Mädchen", "n", "person"),
    Noun("teacher", "teachers", "Lehrer", "Lehrer", "m", "person"),
    Noun("friend", "friends", "Freund", "Freunde", "m", "person"),
    Noun("dog", "dogs", "Hund", "Hunde", "m", "animal"),
    Noun("cat", "cats", "Katze", "Katzen", "f", "animal"),
    Noun("bird", "birds", "Vogel", "Vögel", "m", "animal"),
    Noun("horse", "horses", "Pferd", "Pferde", "n", "animal"),
    Noun("apple", "apples", "Apfel", "Äpfel", "m", "food"),
    Noun("egg", "eggs", "Ei", "Eier", "n", "food"),
    Noun("cake", "cakes", "Kuchen", "Kuchen", "m", "food"),
    Noun("banana", "bananas", "Banane", "Bananen", "f", "food"),
    Noun("orange", "oranges", "Orange", "Orangen", "f", "food"),
    Noun("book", "books", "Buch", "Bücher", "n", "text"),
    Noun("letter", "letters", "Brief", "Briefe", "m", "text"),
    Noun("newspaper", "newspapers", "Zeitung", "Zeitungen", "f", "text"),
    Noun("cup", "cups", "Tasse", "Tassen", "f", "thing"),
    Noun("ball", "balls", "Ball", "Bälle", "m", "thing"),
    Noun("key", "keys", "Schlüssel", "Schlüssel", "m", "thing"),
    Noun("bag", "bags", "Tasche", "Taschen", "f", "thing"),
    Noun("hat", "hats", "Hut", "Hüte", "m", "thing"),
    Noun("flower", "flowers", "Blume", "Blumen", "f", "thing"),
    Noun("picture", "pictures", "Bild", "Bilder", "n", "thing"),
    Noun("car", "cars", "Auto", "Autos", "n", "vehicle"),
    Noun("bike", "bikes", "Fahrrad", "Fahrräder", "n", "vehicle"),
)


def _place(en: str, de: str, gender: str, en_prep: str, de_prep: str, animate: bool = True) -> Place:
    # Places are only ever used in the singular, so their plural slots just repeat the singular.
    return Place(Noun(en, en, de, de, gender, "place"), en_prep, de_prep, animate)


PLACES: tuple[Place, ...] = (
    _place("garden", "Garten", "m", "in", "in"),
    _place("kitchen", "Küche", "f", "in", "in"),
    _place("park", "Park", "m", "in", "in"),
    _place("house", "Haus", "n", "in", "in"),
    _place("school", "Schule", "f", "in", "in"),
    _place("office", "Büro", "n", "in", "in"),
    _place("table", "Tisch", "m", "on", "auf", animate=False),
    _place("street", "Straße", "f", "on", "auf"),
    _place("market", "Markt", "m", "at", "auf"),
    _place("station", "Bahnhof", "m", "at", "an"),
    _place("lake", "See", "m", "at", "an"),
)

ADJECTIVES: tuple[Adjective, ...] = (
    Adjective("old", "alt", ("person", "animal", "text", "thing", "vehicle", "place")),
    Adjective("young", "jung", ("person", "animal")),
    Adjective("big", "groß", ("animal", "food", "thing", "vehicle", "place")),
    Adjective("small", "klein", ("person", "animal", "food", "text", "thing", "vehicle", "place")),
    Adjective("red", "rot", ("food", "text", "thing", "vehicle")),
    Adjective("green", "grün", ("food", "thing", "vehicle")),
    Adjective("blue", "blau", ("text", "thing", "vehicle")),
    Adjective("new", "neu", ("text", "thing", "vehicle")),
    Adjective("black", "schwarz", ("animal", "thing", "vehicle")),
)

TRANSITIVE_VERBS: tuple[Verb, ...] = (
    Verb("read", "reads", "lesen", ("person",), ("text",), de_changed="lies", en_ing="reading"),
    Verb("eat", "eats", "essen", _ANIMATE, ("food",), de_changed="iss", en_ing="eating"),
    Verb("see", "sees", "sehen", _ANIMATE, ("person", *_CONCRETE), de_changed="sieh", en_ing="seeing"),
    Verb("take", "takes", "nehmen", ("person",), ("food", "text", "thing"), de_changed="nimm", en_ing="taking"),
    Verb("buy", "buys", "kaufen", ("person",), ("food", "text", "thing", "vehicle"), en_ing="buying"),
    Verb("carry", "carries", "tragen", ("person",), ("food", "text", "thing"), de_changed="träg", en_ing="carrying"),
    Verb("find", "finds", "finden", _ANIMATE, ("text", "thing"), en_ing="finding"),
    Verb(
        "wash", "washes", "waschen", ("person",), ("animal", "thing", "vehicle"), de_changed="wäsch", en_ing="washing"
    ),
    Verb("bring", "brings", "bringen", _ANIMATE, ("food", "text", "thing"), en_ing="bringing"),
    Verb(
        "have",
        "has",
        "haben",
        ("person",),
        ("person", *_CONCRETE),
        de_irregular=("habe", "hast", "hat", "haben", "habt", "haben"),
        timed=False,
    ),
)
DITRANSITIVE_VERBS: tuple[Verb, ...] = (
    Verb("give", "gives", "geben", ("person",), ("food", "text", "thing"), de_changed="gib", ditransitive=True),
)
INTRANSITIVE_VERBS: tuple[Verb, ...] = (
    Verb("sleep", "sleeps", "schlafen", _ANIMATE, de_changed="schläf", companion=False),
    Verb("play", "plays", "spielen", _ANIMATE),
    Verb("wait", "waits", "warten", _ANIMATE),
    Verb("work", "works", "arbeiten", ("person",)),
    Verb("sit", "sits", "sitzen", _ANIMATE),
)
BE = Verb(
    "are",
    "is",
    "sein",
    ("person", *_CONCRETE),
    en_1sg="am",
    de_irregular=("bin", "bist", "ist", "sind", "seid", "sind"),
)

NAMES: tuple[Name, ...] = (
    Name("Anna", "she"),
    Name("Maria", "she"),
    Name("Lisa", "she"),
    Name("Emma", "she"),
    Name("Tom", "he"),
    Name("Peter", "he"),
    Name("Max", "he"),
    Name("Paul", "he"),
)
PRONOUNS: tuple[Subject, ...] = (
    Subject("I", "ich", "1sg"),
    Subject("we", "wir", "1pl"),
    Subject("he", "er", "3sg"),
    Subject("she", "sie", "3sg"),
    Subject("they", "sie", "3pl"),
)
TIMES: tuple[TimePhrase, ...] = (
    TimePhrase("in the morning", "am Morgen", "morning", "part"),
    TimePhrase("in the afternoon", "am Nachmittag", "afternoon", "part"),
    TimePhrase("in the evening", "am Abend", "evening", "part"),
    TimePhrase("at night", "in der Nacht", "night", "part"),
    TimePhrase("on Monday", "am Montag", "monday", "day"),
    TimePhrase("on Wednesday", "am Mittwoch", "wednesday", "day"),
    TimePhrase("on Friday", "am Freitag", "friday", "day"),
    TimePhrase("on Sunday", "am Sonntag", "sunday", "day"),
    TimePhrase("today", "heute", "today", "today"),
)
EN_NUMBERS: dict[int, str] = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine"}
DE_NUMBERS: dict[int, str] = {2: "zwei", 3: "drei", 4: "vier", 5: "fünf", 6: "sechs", 7: "sieben", 8: "acht", 9: "neun"}

# --- German declension tables (slot = gender "m"/"f"/"n", or "pl") ----------------------------------------------------

_DEFINITE = {
    "nom": {"m": "der", "f": "die", "n": "das", "pl": "die"},
    "acc": {"m": "den", "f": "die", "n": "das", "pl": "die"},
    "dat": {"m": "dem", "f": "der", "n": "dem", "pl": "den"},
}
# ein/mein share their endings; "ein" itself has no plural, which NounPhrase rules out.
_EIN_WORD_STEM = {"a": "ein", "my": "mein"}
_EIN_WORD_ENDING = {
    "nom": {"m": "", "f": "e", "n": "", "pl": "e"},
    "acc": {"m": "en", "f": "e", "n": "", "pl": "e"},
    "dat": {"m": "em", "f": "er", "n": "em", "pl": "en"},
}
# Weak after der/die/das, mixed after ein-words, strong with no article (only plurals go article-less here).
_ADJECTIVE_ENDING = {
    "weak": {
        "nom": {"m": "e", "f": "e", "n": "e", "pl": "en"},
        "acc": {"m": "en", "f": "e", "n": "e", "pl": "en"},
        "dat": {"m": "en", "f": "en", "n": "en", "pl": "en"},
    },
    "mixed": {
        "nom": {"m": "er", "f": "e", "n": "es", "pl": "en"},
        "acc": {"m": "en", "f": "e", "n": "es", "pl": "en"},
        "dat": {"m": "en", "f": "en", "n": "en", "pl": "en"},
    },
    "strong": {"nom": {"pl": "e"}, "acc": {"pl": "e"}, "dat": {"pl": "en"}},
}
# Preposition + dative "dem" fuse in standard German; "auf dem" and "mit dem" stay apart.
_CONTRACTIONS = {("in", "dem"): "im", ("an", "dem"): "am", ("bei", "dem"): "beim"}

# --- Rendering --------------------------------------------------------------------------------------------------------


def english_np(np: NounPhrase) -> str:
    """Render a noun phrase in English, choosing "a" or "an" from the following word."""
    words = [np.det] if np.det else []
    if np.number:
        words.append(EN_NUMBERS[np.number])
    if np.adj:
        words.append(np.adj.en)
    words.append(np.noun.en_pl if np.plural else np.noun.en_sg)
    if words[0] == "a" and words[1][0] in "aeiou":
        words[0] = "an"  # every vowel-initial word in the lexicon starts with a vowel sound
    return " ".join(words)


def german_np(np: NounPhrase, case: str) -> str:
    """Render a noun phrase in German in the given case ("nom", "acc" or "dat")."""
    slot = "pl" if np.plural else np.noun.gender
    words = []
    if np.det == "the":
        words.append(_DEFINITE[case][slot])
        declension = "weak"
    elif np.det:
        words.append(_EIN_WORD_STEM[np.det] + _EIN_WORD_ENDING[case][slot])
        declension = "mixed"
    else:
        declension = "strong"
    if np.number:
        words.append(DE_NUMBERS[np.number])  # German numerals 2-9 do not decline
    if np.adj:
        words.append(np.adj.de + _ADJECTIVE_ENDING[declension][case][slot])
    words.append(np.noun.de_form(np.plural, case))
    return " ".join(words)


def contract(prep: str, np_de: str) -> str:
    """Join a German preposition to a dative noun phrase, fusing "in dem" -> "im" and "an dem" -> "am"."""
    article, _, rest = np_de.partition(" ")
    fused = _CONTRACTIONS.get((prep, article))
    return f"{fused} {rest}" if fused else f"{prep} {np_de}"


def place_phrase(ref: PlaceRef) -> tuple[str, str]:
    """English and German locative phrase, e.g. ("at the station", "am Bahnhof")."""
    np = NounPhrase(ref.place.noun, "the", False, adj=ref.adj)
    return f"{ref.place.en_prep} {english_np(np)}", contract(ref.place.de_prep, german_np(np, "dat"))


def np_subject(np: NounPhrase) -> Subject:
    return Subject(english_np(np), german_np(np, "nom"), "3pl" if np.plural else "3sg")


def name_subject(name: Name) -> Subject:
    return Subject(name.text, name.text, "3sg")


def render(clause: Clause) -> TranslationPair:
    """Linearise a clause: English S-V-O-place-time, German verb-second with time before the objects."""
    en_rest: list[str] = []
    de_rest: list[str] = []
    if clause.recipient:
        en_rest.append(english_np(clause.recipient))
        de_rest.append(german_np(clause.recipient, "dat"))
    if clause.obj:
        en_rest.append(english_np(clause.obj))
        de_rest.append(german_np(clause.obj, "acc"))
    if clause.companion:
        en_rest.append("with " + english_np(clause.companion))
        de_rest.append("mit " + german_np(clause.companion, "dat"))
    if clause.place:
        en_place, de_place = place_phrase(clause.place)
        en_rest.append(en_place)
        de_rest.append(de_place)
    subject, person = clause.subject, clause.subject.person
    en_verb, de_verb = clause.verb.en_form(person), clause.verb.de_form(person)
    time = clause.time
    if time and clause.time_first:
        # The fronted adverbial fills German's first slot, so the finite verb comes before the subject.
        en = [time.en, subject.en, en_verb, *en_rest]
        de = [time.de, de_verb, subject.de, *de_rest]
    else:
        # German puts time before objects and place (TeKaMoLo); English leaves it at the end.
        en = [subject.en, en_verb, *en_rest, *([time.en] if time else [])]
        de = [subject.de, de_verb, *([time.de] if time else []), *de_rest]
    return TranslationPair(_sentence(en), _sentence(de))


def _sentence(words: list[str]) -> str:
    return _capitalise(" ".join(words)) + "."


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


# --- Translation sampling ---------------------------------------------------------------------------------------------

_MIN_WORDS, _MAX_WORDS = 4, 12
_MAX_TRIES = 200  # length rejection almost always succeeds within a few draws

_CLAUSE_KINDS = ("transitive", "ditransitive", "intransitive", "copula")
_CLAUSE_WEIGHTS = (0.5, 0.12, 0.23, 0.15)
# (determiner, plural, numbered): singular definite/indefinite dominate, as in ordinary text.
_NP_SHAPES = (
    ("the", False, False),
    ("a", False, False),
    ("my", False, False),
    ("the", True, False),
    ("", True, True),
    ("", True, False),
    ("my", True, False),
    ("the", True, True),
)
_NP_SHAPE_WEIGHTS = (0.28, 0.24, 0.08, 0.1, 0.2, 0.05, 0.03, 0.02)
_P_ADJECTIVE = 0.35
_P_PLACE_ADJECTIVE = 0.25
_P_PLACE = 0.5
_P_TIME = 0.4
_P_TIME_FIRST = 0.4


def sample_translation(rng: random.Random) -> TranslationPair:
    """Draw one English sentence (4-12 words) with its German translation."""
    for _ in range(_MAX_TRIES):
        pair = render(_sample_clause(rng))
        if _MIN_WORDS <= len(pair.en.split()) <= _MAX_WORDS:
            return pair
    raise RuntimeError("could not draw a sentence of acceptable length")


def _sample_clause(rng: random.Random) -> Clause:
    kind = rng.choices(_CLAUSE_KINDS, weights=_CLAUSE_WEIGHTS)[0]
    pools = {"transitive": TRANSITIVE_VERBS, "ditransitive": DITRANSITIVE_VERBS, "intransitive": INTRANSITIVE_VERBS}
    verb = BE if kind == "copula" else rng.choice(pools[kind])
    subject, used = _sample_subject(rng, verb.subjects)
    animate_subject = not used or used[0].category in _ANIMATE  # names and pronouns come back without a noun
    recipient = obj = companion = place = None
    if verb.ditransitive:
        recipient = _sample_np(rng, _ANIMATE, exclude=used)
        used += (recipient.noun,)
    if verb.objects:
        obj = _sample_np(rng, verb.objects, exclude=used)
    if kind == "intransitive" and verb.companion and rng.random() < 0.45:
        companion = _sample_np(rng, verb.subjects, exclude=used)  # who can do it can do it together: work -> people
        used += (companion.noun,)
    animate = animate_subject or any(n.category in _ANIMATE for n in used)
    # "The dog sleeps." alone is too thin: an intransitive clause without companion always gets a place.
    if kind == "copula" or (kind == "intransitive" and companion is None) or rng.random() < _P_PLACE:
        place = _sample_place(rng, animate)
    time = rng.choice(TIMES) if verb.timed and rng.random() < _P_TIME else None
    time_first = time is not None and rng.random() < _P_TIME_FIRST
    return Clause(subject, verb, obj, recipient, companion, place, time, time_first)


def _sample_subject(rng: random.Random, categories: tuple[str, ...]) -> tuple[Subject, tuple[Noun, ...]]:
    """A name, a pronoun or a nominative noun phrase; also returns the noun used, so objects can avoid it."""
    r = rng.random()
    if "person" in categories and r < 0.3:
        return name_subject(rng.choice(NAMES)), ()
    if "person" in categories and r < 0.5:
        return rng.choice(PRONOUNS), ()
    np = _sample_np(rng, categories)
    return np_subject(np), (np.noun,)


def _sample_np(rng: random.Random, categories: tuple[str, ...], exclude: tuple[Noun, ...] = ()) -> NounPhrase:
    noun = rng.choice(_nouns_in(categories, exclude))
    det, plural, numbered = rng.choices(_NP_SHAPES, weights=_NP_SHAPE_WEIGHTS)[0]
    if det == "my" and noun.category == "person":
        det = "the"  # "my women", "my men" sound odd; possessives stay with animals and things
    number = rng.randint(2, 9) if numbered else 0
    return NounPhrase(noun, det, plural, number, _maybe_adjective(rng, noun, _P_ADJECTIVE))


def _sample_place(rng: random.Random, animate: bool) -> PlaceRef:
    place = rng.choice(tuple(p for p in PLACES if p.animate or not animate))
    return PlaceRef(place, _maybe_adjective(rng, place.noun, _P_PLACE_ADJECTIVE))


def _nouns_in(categories: tuple[str, ...], exclude: tuple[Noun, ...] = ()) -> tuple[Noun, ...]:
    # Excluding the subject's noun avoids reflexive-sounding pairs such as "The dog sees a dog."
    return tuple(n for n in NOUNS if n.category in categories and n not in exclude)


def _maybe_adjective(rng: random.Random, noun: Noun, probability: float) -> Adjective | None:
    if rng.random() >= probability:
        return None
    return rng.choice(tuple(a for a in ADJECTIVES if noun.category in a.categories))


# --- Spoken question answering ----------------------------------------------------------------------------------------

# Question phrasings per kind, as str.format templates over the slots built by _slots(). {extra} is "" or a
# leading-space place/time phrase; {claim} (yes/no only) is what the question asserts after the verb.
QUESTION_TEMPLATES: dict[str, tuple[str, ...]] = {
    "who": (
        "Who {verb_3sg} {obj_def}?",
        "Which person {verb_3sg} {obj_bare}{extra}?",
        "Who is mentioned as {verb_ing} something?",
        "Who is the person that {verb_3sg} {obj_def}?",
    ),
    "what": (
        "What does {name} {verb}{extra}?",
        "Which thing does {name} {verb}?",
        "What is the object that {name} {verb_3sg}?",
    ),
    "where": (
        "Where does {name} {verb} {obj_def}?",
        "Where is {name}?",
        "In which place does {name} {verb} {obj_def}?",
        "At what location does {name} {verb} something?",
    ),
    "when": (
        "When does {name} {verb} {obj_def}?",
        "At what time does {name} {verb} {obj_def}?",
        "When does {name} {verb} something{extra}?",
        "According to the passage, when does {name} {verb} {obj_def}?",
    ),
    "how_many": (
        "How many {obj_pl} does {name} {verb}{extra}?",
        "What is the number of {obj_pl} that {name} {verb_3sg}?",
        "How many {obj_pl} are mentioned in the passage?",
    ),
    "yes_no": (
        "Does {name} {verb} {claim}?",
        "Is it true that {name} {verb_3sg} {claim}?",
        "According to the passage, does {name} {verb} {claim}?",
        "Does the passage say that {name} {verb_3sg} {claim}?",
    ),
}
# Bare phrase or sentence answers; the rng picks one so references vary in form.
_ANSWER_TEMPLATES: dict[str, tuple[str, ...]] = {
    "who": ("{name}.", "{name} does.", "{name} {verb_3sg} {obj_pron}."),
    "what": ("{np}.", "{pron} {verb_3sg} {np}.", "{name} {verb_3sg} {np}."),
    "where": ("{place}.", "{pron} {verb_3sg} {obj_pron} {place}.", "{name} is {place}."),
    "when": ("{time}.", "{pron} {verb_3sg} {obj_pron} {time}.", "{name} {verb_3sg} {obj_def} {time}."),
    "how_many": ("{number}.", "{number} {obj_pl}.", "{pron} {verb_3sg} {np}."),
    "yes": ("Yes.", "Yes, {pron} does.", "Yes, {name} {verb_3sg} {np}."),
    "no": ("No.", "No, {asked_pron} does not.", "{correction}"),
}
# The corrective "no" answer states what the passage really says about the probed slot.
_CORRECTIONS: dict[str, str] = {
    "agent": "No, {name} {verb_3sg} {obj_pron}.",
    "object": "No, {pron} {verb_3sg} {np}.",
    "place": "No, {pron} {verb_3sg} {obj_pron} {place}.",
    "time": "No, {pron} {verb_3sg} {obj_pron} {time}.",
    "number": "No, {pron} {verb_3sg} {np}.",
}
# Object categories QA avoids: "it"/"them" would be wrong pronouns for people.
_QA_OBJECTS = ("animal", "food", "text", "thing", "vehicle")
_QA_VERBS: tuple[Verb, ...] = tuple(v for v in TRANSITIVE_VERBS if v.en_ing)
# single: one event sentence; located: "Tom is in the kitchen. He reads a book."; pair: two people, two events.
_LAYOUTS = ("single", "located", "pair")
_LAYOUT_WEIGHTS = (0.4, 0.3, 0.3)
_EXTRA_SLOTS = {"who": ("place",), "what": ("place", "time"), "when": ("place",), "how_many": ("place", "time")}


@dataclass(frozen=True)
class _Event:
    """Who does what to which object, optionally where and when; the content a QA passage states."""

    agent: Name
    verb: Verb
    obj: NounPhrase
    place: PlaceRef | None
    time: TimePhrase | None


@dataclass(frozen=True)
class _QADraft:
    item: QAItem
    key: str  # the content word the answer hinges on (lower case): name, noun, place, time word or number
    template: str  # the question template used


def sample_qa(rng: random.Random) -> QAItem:
    """Draw one spoken-QA item; kinds are uniform over QUESTION_KINDS."""
    return _sample_qa_draft(rng).item


def _sample_qa_draft(rng: random.Random) -> _QADraft:
    kind = rng.choice(QUESTION_KINDS)
    layout = rng.choices(_LAYOUTS, weights=_LAYOUT_WEIGHTS)[0]
    focus = _sample_event(
        rng, need_place=kind == "where" or layout == "located", need_time=kind == "when", need_count=kind == "how_many"
    )
    other = _sample_event(rng, avoid=focus) if layout == "pair" else None
    return _build_draft(rng, kind, layout, focus, other)


def _build_draft(rng: random.Random, kind: str, layout: str, focus: _Event, other: _Event | None) -> _QADraft:
    """Speak the events as a passage and ask a ``kind`` question about ``focus``."""
    passage = _render_passage(rng, layout, focus, other)
    slots = _slots(focus)
    if kind == "yes_no":
        template, question, answer, key = _yes_no(rng, focus, slots, set(words(passage)))
    else:
        extras = [""] + [" " + slots[s] for s in _EXTRA_SLOTS.get(kind, ()) if slots[s]]
        slots["extra"] = rng.choice(extras)
        template = rng.choice(QUESTION_TEMPLATES[kind])
        question = template.format(**slots)
        answer = rng.choice(_ANSWER_TEMPLATES[kind]).format(**slots)
        key = _answer_key(kind, focus)
    return _QADraft(QAItem(passage, question, _capitalise(answer), kind), key, template)


def _sample_event(
    rng: random.Random,
    *,
    need_place: bool = False,
    need_time: bool = False,
    need_count: bool = False,
    avoid: _Event | None = None,
) -> _Event:
    """An event; with ``avoid`` the agent, verb and object noun all differ so questions stay unambiguous."""
    agent = rng.choice(tuple(n for n in NAMES if avoid is None or n != avoid.agent))
    verb = rng.choice(tuple(v for v in _QA_VERBS if avoid is None or v != avoid.verb))
    exclude = (avoid.obj.noun,) if avoid else ()
    noun = rng.choice(_nouns_in(tuple(c for c in verb.objects if c in _QA_OBJECTS), exclude))
    plural = need_count or rng.random() < 0.5
    obj = NounPhrase(
        noun, "" if plural else "a", plural, rng.randint(2, 9) if plural else 0, _maybe_adjective(rng, noun, 0.4)
    )
    place = _sample_place(rng, animate=True) if need_place or rng.random() < 0.5 else None
    time = rng.choice(TIMES) if need_time or rng.random() < 0.35 else None
    return _Event(agent, verb, obj, place, time)


def _render_passage(rng: random.Random, layout: str, focus: _Event, other: _Event | None) -> str:
    if layout == "located":
        # The place sits in the first sentence and the action in the second, so questions must link them.
        time_in_first = focus.time is not None and rng.random() < 0.4
        first = Clause(
            name_subject(focus.agent),
            BE,
            place=focus.place,
            time=focus.time if time_in_first else None,
            time_first=rng.random() < 0.3,
        )
        pronoun = next(p for p in PRONOUNS if p.en == focus.agent.pronoun)
        second = Clause(
            pronoun, focus.verb, focus.obj, time=None if time_in_first else focus.time, time_first=rng.random() < 0.4
        )
        return f"{render(first).en} {render(second).en}"
    events = [focus] if other is None else [focus, other]
    if len(events) == 2 and rng.random() < 0.5:
        events.reverse()
    return " ".join(render(_event_clause(rng, e)).en for e in events)


def _event_clause(rng: random.Random, event: _Event) -> Clause:
    return Clause(
        name_subject(event.agent),
        event.verb,
        event.obj,
        place=event.place,
        time=event.time,
        time_first=rng.random() < _P_TIME_FIRST,
    )


def _slots(event: _Event) -> dict[str, str]:
    """Everything question and answer templates may refer to, rendered for one event."""
    obj = event.obj
    return {
        "name": event.agent.text,
        "pron": event.agent.pronoun,
        "verb": event.verb.en,
        "verb_3sg": event.verb.en_3sg,
        "verb_ing": event.verb.en_ing,
        "np": english_np(obj),
        "obj_def": _definite(obj),
        "obj_bare": english_np(replace(obj, number=0, adj=None)),
        "obj_pl": obj.noun.en_pl,
        "obj_pron": "them" if obj.plural else "it",
        "place": place_phrase(event.place)[0] if event.place else "",
        "time": event.time.en if event.time else "",
        "number": EN_NUMBERS.get(obj.number, ""),
    }


def _answer_key(kind: str, event: _Event) -> str:
    if kind == "who":
        return event.agent.text.lower()
    if kind == "what":
        return event.obj.noun.en_pl if event.obj.plural else event.obj.noun.en_sg
    if kind == "where":
        return event.place.place.noun.en_sg if event.place else ""
    if kind == "when":
        return event.time.key if event.time else ""
    return EN_NUMBERS[event.obj.number]


def _yes_no(
    rng: random.Random, event: _Event, slots: dict[str, str], passage_words: set[str]
) -> tuple[str, str, str, str]:
    """Probe one slot of the event with its true value or with a value the passage never mentions.

    Returns (template, question, answer, key) where key is the probed word.
    """
    truthful = rng.random() < 0.5
    targets = ["agent", "object"]
    if event.place:
        targets.append("place")
    if event.time and (truthful or _wrong_times(event.time, passage_words)):
        targets.append("time")  # "today" has nothing of its kind to contrast with
    if event.obj.plural:
        targets.append("number")
    target = rng.choice(targets)
    agent, claim, key = _PROBES[target](rng, event, truthful, passage_words)
    probe = dict(
        slots, name=agent.text, asked_pron=agent.pronoun, claim=claim, correction=_CORRECTIONS[target].format(**slots)
    )
    template = rng.choice(QUESTION_TEMPLATES["yes_no"])
    answer = rng.choice(_ANSWER_TEMPLATES["yes" if truthful else "no"])
    return template, template.format(**probe), answer.format(**probe), key


# Each probe returns (agent named in the question, claim after the verb, probed word).
_Probe = tuple[Name, str, str]


def _probe_agent(rng: random.Random, event: _Event, truthful: bool, passage_words: set[str]) -> _Probe:
    agent = event.agent if truthful else rng.choice(tuple(n for n in NAMES if n.text.lower() not in passage_words))
    return agent, _definite(event.obj), agent.text.lower()


def _probe_object(rng: random.Random, event: _Event, truthful: bool, passage_words: set[str]) -> _Probe:
    obj = event.obj
    noun = obj.noun if truthful else rng.choice(_wrong_nouns(event, passage_words))
    claim = english_np(NounPhrase(noun, "" if obj.plural else "a", obj.plural))
    return event.agent, claim, noun.en_pl if obj.plural else noun.en_sg


def _probe_place(rng: random.Random, event: _Event, truthful: bool, passage_words: set[str]) -> _Probe:
    assert event.place is not None  # only offered when the event has a place
    place = event.place.place
    if not truthful:
        place = rng.choice(tuple(p for p in PLACES if p.animate and p.noun.en_sg not in passage_words))
    return event.agent, f"{_definite(event.obj)} {place_phrase(PlaceRef(place))[0]}", place.noun.en_sg


def _probe_time(rng: random.Random, event: _Event, truthful: bool, passage_words: set[str]) -> _Probe:
    assert event.time is not None  # only offered when the event has a time
    time = event.time if truthful else rng.choice(_wrong_times(event.time, passage_words))
    return event.agent, f"{_definite(event.obj)} {time.en}", time.key


def _probe_number(rng: random.Random, event: _Event, truthful: bool, passage_words: set[str]) -> _Probe:
    number = event.obj.number
    if not truthful:
        number = rng.choice(tuple(n for n, w in EN_NUMBERS.items() if w not in passage_words))
    return event.agent, f"{EN_NUMBERS[number]} {event.obj.noun.en_pl}", EN_NUMBERS[number]


_PROBES = {
    "agent": _probe_agent,
    "object": _probe_object,
    "place": _probe_place,
    "time": _probe_time,
    "number": _probe_number,
}


def _definite(obj: NounPhrase) -> str:
    return f"the {obj.noun.en_pl if obj.plural else obj.noun.en_sg}"


def _wrong_nouns(event: _Event, passage_words: set[str]) -> tuple[Noun, ...]:
    candidates = _nouns_in(tuple(c for c in event.verb.objects if c in _QA_OBJECTS))
    return tuple(n for n in candidates if n.en_sg not in passage_words and n.en_pl not in passage_words)


def _wrong_times(time: TimePhrase | None, passage_words: set[str]) -> tuple[TimePhrase, ...]:
    # Only a time of the same kind contradicts the passage: "on Monday" does not rule out "in the morning".
    if time is None:
        return ()
    return tuple(t for t in TIMES if t.group == time.group and t.key not in passage_words)


# --- Vocabulary -------------------------------------------------------------------------------------------------------

_WORD = re.compile(r"[^\W\d_]+")


def words(text: str) -> list[str]:
    """Lower-cased word tokens of a sentence, punctuation dropped (the unit vocabulary() counts)."""
    return _WORD.findall(text.lower())


def spoken_vocabulary() -> set[str]:
    """English words that can be spoken: every word of translation sentences and QA passages."""
    out: set[str] = set()
    for text in (
        *(n.text for n in NAMES),
        *(p.en for p in PRONOUNS),
        "the a an my with",
        *EN_NUMBERS.values(),
        *(a.en for a in ADJECTIVES),
        *(f"{n.en_sg} {n.en_pl}" for n in NOUNS),
        *(f"{p.en_prep} {p.noun.en_sg}" for p in PLACES),
        *(f"{v.en} {v.en_3sg} {v.en_1sg}" for v in (*TRANSITIVE_VERBS, *DITRANSITIVE_VERBS, *INTRANSITIVE_VERBS, BE)),
        *(t.en for t in TIMES),
    ):
        out.update(words(text))
    return out


def _german_vocabulary() -> set[str]:
    out: set[str] = set()
    endings = {e for table in _ADJECTIVE_ENDING.values() for row in table.values() for e in row.values()}
    article_forms = [a for row in _DEFINITE.values() for a in row.values()]
    article_forms += [
        stem + e for stem in _EIN_WORD_STEM.values() for row in _EIN_WORD_ENDING.values() for e in row.values()
    ]
    verbs = (*TRANSITIVE_VERBS, *DITRANSITIVE_VERBS, *INTRANSITIVE_VERBS, BE)
    for text in (
        *(n.text for n in NAMES),
        *(p.de for p in PRONOUNS),
        "mit",
        *article_forms,
        *DE_NUMBERS.values(),
        *(a.de + e for a in ADJECTIVES for e in endings),
        *(f"{n.de_sg} {n.de_pl}" for n in NOUNS),
        # Only people and animals occur in the dative (recipients, companions).
        *(n.de_form(True, "dat") for n in NOUNS if n.category in _ANIMATE),
        *(place_phrase(PlaceRef(p))[1] for p in PLACES),
        *(v.de_form(p) for v in verbs for p in ("1sg", "3sg", "1pl", "3pl")),  # no du/ihr: "you" is ambiguous
        *(t.de for t in TIMES),
    ):
        out.update(words(text))
    return out


def vocabulary() -> tuple[set[str], set[str]]:
    """All English and all German words the grammar can emit (lower-cased, no punctuation).

    English covers translation sentences and every QA passage, question and answer; German covers translations.
    """
    english = spoken_vocabulary() | {"it", "them"}
    english |= {v.en_ing for v in _QA_VERBS}
    for template in (
        *(t for ts in QUESTION_TEMPLATES.values() for t in ts),
        *(t for ts in _ANSWER_TEMPLATES.values() for t in ts),
        *_CORRECTIONS.values(),
    ):
        english.update(words(re.sub(r"\{\w+\}", " ", template)))
    return english, _german_vocabulary()
