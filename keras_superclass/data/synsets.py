"""WordNet synset labels of captions, as CatLIP (corenet) mines them.

A caption becomes a set of WordNet noun synsets by corenet's rules (the
steps are listed in `synset_mining`, re-exported here).

A `SynsetVocabulary` (the most frequent synsets of a dataset) turns those
keys into class ids; a caption without a match has no label (all-zero
target) and stays in the data.

WordNet 3.0 must be installed for NLTK (`scripts/install_wordnet.sh` does
it offline). Nothing here downloads data at run time. This module builds
vocabularies, labels captions and reads caption files.
"""

import collections
import hashlib
import itertools
import json
import multiprocessing
import os
import sys

import numpy as np

from keras_superclass.data.captions import CaptionSource
from keras_superclass.data.synset_mining import _wordnet as _wordnet
from keras_superclass.data.synset_mining import caption_synsets_with_lemmas
from keras_superclass.data.synset_mining import caption_to_synsets
from keras_superclass.data.synset_mining import check_wordnet
from keras_superclass.data.synset_mining import clean_caption
from keras_superclass.data.synset_mining import synset_key
from keras_superclass.data.synset_mining import word_to_synset
from keras_superclass.data.synset_mining import word_tokenize
from keras_superclass.utils.io import atomic_write_text

# `_wordnet` above is imported for `evaluation.transfer_init`.

DEFAULT_MIN_COUNT = 500
DEFAULT_MAX_SIZE = 24320


class SynsetVocabulary:
    """An ordered list of synsets: the classes of a CatLIP head.

    Class `i` is entry `i`; entries are sorted by decreasing count. Saved as
    JSON: a list of `{"key": "n5928118", "lemma": "image", "count": N}`.

    Args:
        entries: a list of dicts with `key` (and optionally `lemma` and
            `count`), or a list of keys.

    Example:
    >>> vocab = SynsetVocabulary(["n5928118", "n4960277"])
    >>> vocab.labels("An image of black dog.")
    [0, 1]
    """

    def __init__(self, entries):
        normalised = []
        for entry in entries:
            if isinstance(entry, str):
                entry = {"key": entry}
            if "key" not in entry:
                raise ValueError(
                    f"Vocabulary entries need a 'key' (e.g. 'n5928118'); got "
                    f"{entry!r}."
                )
            normalised.append(
                {
                    "key": str(entry["key"]),
                    "lemma": entry.get("lemma"),
                    "count": int(entry.get("count", 0)),
                }
            )
        self.entries = normalised
        self.keys = [e["key"] for e in normalised]
        self.index = {key: i for i, key in enumerate(self.keys)}
        if len(self.index) != len(self.keys):
            counts = collections.Counter(self.keys)
            dupes = [k for k, c in counts.items() if c > 1][:5]
            raise ValueError(
                f"Duplicate synset keys in the vocabulary: {dupes}"
            )

    def __len__(self):
        return len(self.keys)

    def __contains__(self, key):
        return key in self.index

    def __repr__(self):
        return f"SynsetVocabulary(size={len(self)})"

    @property
    def lemmas(self):
        """The lemma (readable name) of every class, `None` if unknown."""
        return [e["lemma"] for e in self.entries]

    def lookup(self, key):
        """Class id of a synset key, or `-1`."""
        return self.index.get(key, -1)

    def labels_of_keys(self, keys):
        """Class ids of the keys that are in the vocabulary, in order."""
        ids = (self.index.get(key) for key in keys)
        return [i for i in ids if i is not None]

    def labels(self, caption):
        """Class ids of a caption's synsets (unique, in order; may be [])."""
        return self.labels_of_keys(caption_to_synsets(caption))

    def multi_hot(self, caption, dtype="float32"):
        """`(V,)` 0/1 target of a caption (all zeros without a match)."""
        target = np.zeros((len(self),), dtype=dtype)
        target[self.labels(caption)] = 1
        return target

    def fingerprint(self):
        """A short hash of the ordered keys (to validate caches)."""
        digest = hashlib.sha256("\n".join(self.keys).encode("utf-8"))
        return digest.hexdigest()[:16]

    @classmethod
    def from_counts(
        cls,
        counts,
        lemmas=None,
        min_count=DEFAULT_MIN_COUNT,
        max_size=DEFAULT_MAX_SIZE,
    ):
        """Keeps synsets with `count > min_count`, the `max_size` largest.

        Ties in count are ordered by key, so the result is deterministic.
        """
        lemmas = lemmas or {}
        kept = [(k, int(c)) for k, c in counts.items() if c > min_count]
        kept.sort(key=lambda kc: (-kc[1], kc[0]))
        if max_size is not None:
            kept = kept[: int(max_size)]
        return cls(
            [{"key": k, "lemma": lemmas.get(k), "count": c} for k, c in kept]
        )

    def save(self, path):
        """Writes the vocabulary as JSON, atomically."""
        atomic_write_text(path, json.dumps(self.entries, indent=0) + "\n")

    @classmethod
    def load(cls, path):
        """Reads a vocabulary written by `save` (or a JSON list of keys)."""
        path = os.fspath(path)
        try:
            with open(path, encoding="utf-8") as f:
                entries = json.load(f)
        except json.JSONDecodeError as error:
            raise ValueError(
                f"{path} is not a synset vocabulary (JSON list of "
                f"{{key, lemma, count}}): {error}. Build one with "
                f"`keras-superclass synsets`."
            ) from error
        if not isinstance(entries, list):
            raise ValueError(
                f"{path} is not a synset vocabulary: expected a JSON list of "
                f"{{key, lemma, count}}, got {type(entries).__name__}."
            )
        return cls(entries)


def _count_chunk(captions):
    counts = collections.Counter()
    lemmas = {}
    for caption in captions:
        for key, lemma in caption_synsets_with_lemmas(caption):
            counts[key] += 1
            lemmas.setdefault(key, lemma)
    return counts, lemmas, len(captions)


def _chunks(iterable, size):
    iterator = iter(iterable)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def _pool(workers, start_method):
    if start_method is None:
        # Forked workers inherit the loaded WordNet; they run NLTK only.
        methods = multiprocessing.get_all_start_methods()
        start_method = "fork" if "fork" in methods else "spawn"
    return multiprocessing.get_context(start_method).Pool(workers)


def _progress(total, show_progress, desc):
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        disable=not show_progress,
        desc=desc,
        unit=" captions",
        file=sys.stderr,
    )


def _map_chunks(fn, captions, workers, chunk_size, ordered, start_method):
    """Yields `fn(chunk)` over chunks of captions, in a pool if workers>1."""
    chunks = _chunks(captions, chunk_size)
    if workers <= 1:
        yield from map(fn, chunks)
        return
    check_wordnet()  # Load once in the parent; forked workers inherit it.
    with _pool(workers, start_method) as pool:
        mapper = pool.imap if ordered else pool.imap_unordered
        yield from mapper(fn, chunks)


def count_synsets(
    captions,
    workers=2,
    show_progress=True,
    chunk_size=1000,
    start_method=None,
):
    """Counts, per synset, the captions that mention it.

    Returns:
        `(counts, lemmas, num_captions)`: a `Counter` of keys, a dict key ->
        lemma, and the number of captions read.
    """
    check_wordnet()
    total = len(captions) if hasattr(captions, "__len__") else None
    counts = collections.Counter()
    lemmas = {}
    num_captions = 0
    with _progress(total, show_progress, "synsets") as bar:
        for chunk_counts, chunk_lemmas, n in _map_chunks(
            _count_chunk, captions, workers, chunk_size, False, start_method
        ):
            counts.update(chunk_counts)
            for key, lemma in chunk_lemmas.items():
                lemmas.setdefault(key, lemma)
            num_captions += n
            bar.update(n)
    return counts, lemmas, num_captions


def build_synset_vocabulary(
    captions_iterable,
    min_count=DEFAULT_MIN_COUNT,
    max_size=DEFAULT_MAX_SIZE,
    workers=2,
    show_progress=True,
    chunk_size=1000,
    start_method=None,
):
    """Builds the CatLIP vocabulary of a caption corpus.

    Counts the captions mentioning each synset (in `workers` processes),
    keeps synsets seen in more than `min_count` captions, the `max_size`
    most frequent first (the reference: > 500, top 24,320).

    Args:
        captions_iterable: caption strings (any iterable; streamed).
        min_count: a synset needs a count strictly above this.
        max_size: the vocabulary keeps at most this many synsets.
        workers: processes counting in parallel (1: in this process).
        show_progress: show a tqdm progress bar on stderr.
        chunk_size: captions per task sent to a worker.
        start_method: multiprocessing start method (default `fork` where
            available, which shares the loaded WordNet).

    Returns:
        A `SynsetVocabulary`.

    Example:
    >>> vocab = build_synset_vocabulary(["a dog", "two dogs"], min_count=1)
    >>> vocab.lemmas
    ['dog']
    """
    counts, lemmas, _ = count_synsets(
        captions_iterable,
        workers=workers,
        show_progress=show_progress,
        chunk_size=chunk_size,
        start_method=start_method,
    )
    return SynsetVocabulary.from_counts(
        counts, lemmas, min_count=min_count, max_size=max_size
    )


class SynsetFeatures:
    """`fn(caption) -> {"synsets": [class ids]}` for the shard writer.

    Pass an instance as `write_shards(..., extra_features_fn=...)` so the
    synset labels are computed once, when the shards are written. Picklable
    (holds only the vocabulary keys).

    Args:
        vocabulary: a `SynsetVocabulary` or the path of its JSON file.

    Example:
    >>> fn = SynsetFeatures(SynsetVocabulary(["n5928118"]))
    >>> fn("an image")
    {'synsets': [0]}
    """

    def __init__(self, vocabulary):
        if not isinstance(vocabulary, SynsetVocabulary):
            vocabulary = SynsetVocabulary.load(vocabulary)
        self.vocabulary = vocabulary

    def __call__(self, caption):
        return {"synsets": self.vocabulary.labels(caption)}

    def fingerprint(self):
        """The vocabulary's fingerprint: the shard writer records it, so
        shards of two vocabularies are never mixed."""
        return self.vocabulary.fingerprint()


def synset_extra_features_fn(vocabulary):
    """The `extra_features_fn` of the shard writer for synset labels."""
    return SynsetFeatures(vocabulary)


class _LabelChunk:
    def __init__(self, keys):
        self.keys = keys
        self._vocabulary = None

    def __call__(self, captions):
        if self._vocabulary is None:
            self._vocabulary = SynsetVocabulary(self.keys)
        return [self._vocabulary.labels(c) for c in captions]


def _captions_digest(captions):
    digest = hashlib.sha256()
    for caption in captions:
        digest.update(str(caption).encode("utf-8"))
        digest.update(b"\x00")
    return digest.hexdigest()[:16]


def synset_labels_for_captions(
    captions,
    vocabulary,
    workers=2,
    cache_path=None,
    show_progress=False,
    chunk_size=1000,
    start_method=None,
):
    """Class ids of every caption, computed in parallel, optionally cached.

    A pre-pass for data whose captions are known up front (e.g. the demo
    dataset). With `cache_path`, the result is stored as JSON together with
    fingerprints of the captions and the vocabulary, and reused only when
    both match.

    Args:
        captions: a sequence of caption strings.
        vocabulary: a `SynsetVocabulary` or the path of its JSON file.
        workers: processes (1: in this process).
        cache_path: optional JSON cache file.
        show_progress: show a tqdm progress bar.

    Returns:
        A list with one list of class ids per caption.
    """
    if not isinstance(vocabulary, SynsetVocabulary):
        vocabulary = SynsetVocabulary.load(vocabulary)
    captions = list(captions)
    fingerprint = {
        "captions": _captions_digest(captions),
        "num_captions": len(captions),
        "vocabulary": vocabulary.fingerprint(),
    }
    if cache_path is not None and os.path.exists(cache_path):
        try:
            with open(cache_path, encoding="utf-8") as f:
                cached = json.load(f)
            if cached.get("fingerprint") == fingerprint:
                return cached["labels"]
        except (json.JSONDecodeError, KeyError, AttributeError):
            pass  # A stale or broken cache is recomputed.
    labels = []
    fn = _LabelChunk(vocabulary.keys)
    with _progress(len(captions), show_progress, "synset labels") as bar:
        for chunk in _map_chunks(
            fn, captions, workers, chunk_size, True, start_method
        ):
            labels.extend(chunk)
            bar.update(len(chunk))
    if cache_path is not None:
        atomic_write_text(
            cache_path,
            json.dumps({"fingerprint": fingerprint, "labels": labels}),
        )
    return labels


def read_captions(paths, column="caption"):
    """Streams captions from caption files, strictly.

    Reads text (one caption per line, blank lines skipped), JSON lines (the
    `column` field), CSV / TSV (the `column` column) and TFRecord files
    (the bytes feature `column`), any of them gzipped (`.gz`): see
    `keras_superclass.data.captions`. A bad line or record raises a
    `ValueError` naming the file and the line.

    Args:
        paths: a path, a glob, a folder, or a list of them.
        column: the caption field of JSONL, CSV and TFRecord files.

    Yields:
        Caption strings.
    """
    yield from CaptionSource(paths, caption_column=column, strict=True)


__all__ = [
    "DEFAULT_MAX_SIZE",
    "DEFAULT_MIN_COUNT",
    "SynsetFeatures",
    "SynsetVocabulary",
    "build_synset_vocabulary",
    "caption_synsets_with_lemmas",
    "caption_to_synsets",
    "check_wordnet",
    "clean_caption",
    "count_synsets",
    "read_captions",
    "synset_extra_features_fn",
    "synset_key",
    "synset_labels_for_captions",
    "word_to_synset",
    "word_tokenize",
]
