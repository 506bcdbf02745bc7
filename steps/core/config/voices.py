"""Word tables: espeak-ng's accent voices and timbre variants (voices/!v, 103 usable) split between training and one
held-out population (validation and test), and the other languages' voices of the held-out accent condition; the
defaults of `synth.train`, `synth.held_out` and `synth.conditions` (params.yaml lists them too). Why each voice is
where it is: docs/tuning.md, "2026-12-05"."""

from __future__ import annotations

# English accents: training takes the five closest to one another, the held-out population the three farthest from
# every training accent (espeak's own phoneme transcriptions of 40 grammar sentences: nearest training accent 0.09-0.13
# phoneme edits per phoneme, where en-GB-x-rp and en-US-nyc, the old held-out ones, were 0.04 and 0.07 from `en` and
# `en-US`).
TRAIN_VOICES: tuple[str, ...] = ("en-US", "en-US-nyc", "en", "en-GB-x-rp", "en-GB-x-gbclan")
HELD_OUT_VOICES: tuple[str, ...] = ("en-GB-scotland", "en-029", "en-GB-x-gbcwmd")
# Held-out timbres: the old validation and test variants less the four that copy a training variant's vowel formants
# (steph = steph3, john = Tweaky but formant 3, f4 = aunty, f5 = f2, each but pitch, breath or voicing).
HELD_OUT_VARIANTS: tuple[str, ...] = ("m2", "m4", "m5", "m6", "f3", "Alex", "Andy", "Annie", "belinda", "david",
                                      "linda", "paul", "quincy", "shelby")
# Accent families never heard in training: other languages' voices reading the English text by their own letter-to-
# sound rules (Germanic de, nl; Romance es, it; Slavic pl). Left out: fr and pt (espeak reads most English words of
# the grammar as English, switching language mid-sentence), ru and hi (non-Latin script: the whole text goes English).
OTHER_LANGUAGE_VOICES: tuple[str, ...] = ("de", "nl", "es", "it", "pl")
TRAIN_VARIANTS: tuple[str, ...] = (
    "", "m1", "m3", "m7", "m8", "f1", "f2", "Alicia", "Andrea", "AnxiousAndy", "Demonic", "Denis", "Diogo", "Gene",
    "Gene2", "Henrique", "Hugo", "Jacky", "Lee", "Marco", "Mario", "Michael", "Mike", "Nguyen", "Reed", "RicishayMax",
    "RicishayMax2", "RicishayMax3", "Storm", "Tweaky", "UniRobot", "adam", "anika", "anikaRobot", "announcer",
    "antonio", "aunty", "benjamin", "boris", "caleb", "croak", "ed", "edward", "edward2", "fast", "grandma", "grandpa",
    "gustave", "ian", "iven", "iven2", "iven3", "iven4", "kaukovalta", "klatt", "klatt2", "klatt3", "klatt4", "klatt5",
    "klatt6", "marcelo", "max", "michel", "miguel", "mike2", "norbert", "pablo", "pedro", "rob", "robert", "robosoft",
    "robosoft2", "robosoft3", "robosoft4", "robosoft5", "robosoft6", "robosoft7", "robosoft8", "sandro", "steph2",
    "steph3", "travis", "victor", "whisper", "whisperf", "zac",
)
NOISE_COLOURS: tuple[str, ...] = ("white", "pink", "brown")
