"""Word table: espeak-ng's timbre variants (voices/!v, 103 usable) split three ways, so that no split of the corpus
hears another's timbres; the defaults of `synth.{train,validation,test}.variants` (params.yaml lists them too)."""

from __future__ import annotations

TEST_VARIANTS: tuple[str, ...] = ("m2", "m5", "f3", "f5", "Andy", "Annie", "david", "linda", "quincy", "steph")
VALIDATION_VARIANTS: tuple[str, ...] = ("m4", "m6", "f4", "Alex", "belinda", "john", "paul", "shelby")
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
