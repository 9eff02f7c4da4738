"""Caption -> WordNet noun synsets, exactly as CatLIP (corenet) mines them.

1. clean the caption (URL-unquote, `+` -> space, strip HTML tags, strip
   newlines, collapse spaces, `ftfy.fix_text`, strip, lowercase);
2. split it into words with NLTK's word tokenizer;
3. try every word as a noun: lemmatize it with `WordNetLemmatizer`, look up
   `wn.synset(f"{word}.n.01")`, skip the word when that fails, and keep the
   synset only when its name is exactly `f"{word}.n.01"`;
4. name each kept synset `f"{pos}{offset}"` without zero padding, e.g.
   `"n5928118"` for image.n.01.

WordNet 3.0 must be installed for NLTK (`scripts/install_wordnet.sh` does
it offline). Nothing here downloads data at run time. `synsets` builds the
vocabularies and labels on top of this.
"""

import functools
import re
import urllib.parse

import ftfy

_HTML_TAG = re.compile("<.*?>")
_SPACES = re.compile(" +")

_INSTALL_HINT = (
    "Install WordNet 3.0 for NLTK offline with "
    "`bash scripts/install_wordnet.sh` (Debian packages wordnet-base and "
    "wordnet-sense-index), or point "
    "NLTK_DATA at a directory holding corpora/wordnet/."
)


def clean_caption(caption):
    """Cleans a caption exactly as corenet's `caption_preprocessing`.

    URL-unquote, `+` -> space, drop HTML tags, strip leading/trailing
    newlines, collapse runs of spaces, `ftfy.fix_text`, strip, lowercase.

    Example:
    >>> clean_caption("An+image%20of <b>black</b>  Dog.\\n")
    'an image of black dog.'
    """
    caption = urllib.parse.unquote(str(caption))
    caption = caption.replace("+", " ")
    caption = _HTML_TAG.sub("", caption)
    caption = caption.strip("\n")
    caption = _SPACES.sub(" ", caption)
    caption = ftfy.fix_text(caption)
    return caption.strip().lower()


@functools.cache
def _tokenizers():
    from nltk.tokenize.destructive import NLTKWordTokenizer
    from nltk.tokenize.punkt import PunktSentenceTokenizer

    return PunktSentenceTokenizer(), NLTKWordTokenizer()


def word_tokenize(text):
    """NLTK's `word_tokenize` without its downloadable Punkt model.

    `nltk.word_tokenize` splits sentences with the pre-trained English Punkt
    model (the `punkt_tab` data download) and then runs `NLTKWordTokenizer`
    on each sentence. Here sentences are split by an untrained
    `PunktSentenceTokenizer`, which needs no data: the two agree except
    right after an abbreviation the English model knows (e.g. "mr.").

    Example:
    >>> word_tokenize("an image of black dog.")
    ['an', 'image', 'of', 'black', 'dog', '.']
    """
    sentences, words = _tokenizers()
    return [
        token
        for sentence in sentences.tokenize(text)
        for token in words.tokenize(sentence)
    ]


@functools.cache
def _wordnet():
    """`(wordnet, lemmatizer)`, loaded once; clear error when missing."""
    try:
        from nltk.corpus import wordnet
        from nltk.stem import WordNetLemmatizer

        wordnet.ensure_loaded()
    except LookupError as error:
        raise RuntimeError(
            f"NLTK cannot find the WordNet corpus. {_INSTALL_HINT}"
        ) from error
    return wordnet, WordNetLemmatizer()


def check_wordnet():
    """Raises a `RuntimeError` naming the fix when WordNet is missing."""
    _wordnet()


def synset_key(synset):
    """`f"{pos}{offset}"` of an NLTK synset, e.g. `"n5928118"`."""
    return f"{synset.pos()}{synset.offset()}"


@functools.lru_cache(maxsize=1 << 18)
def word_to_synset(word):
    """`(key, lemma)` of a word's first noun sense, or `None`.

    The word is lemmatized as a noun; `wn.synset(f"{lemma}.n.01")` must
    exist and be named exactly `f"{lemma}.n.01"` (so "photo", whose first
    sense is photograph.n.01, gives `None`).
    """
    wordnet, lemmatizer = _wordnet()
    try:
        lemma = lemmatizer.lemmatize(word)
        synset = wordnet.synset(f"{lemma}.n.01")
    except Exception:  # WordNetError, or a malformed name.
        return None
    if synset.name() != f"{lemma}.n.01":
        return None
    return synset_key(synset), lemma


def caption_synsets_with_lemmas(caption):
    """`[(key, lemma), ...]` of a caption's synsets, unique, in order."""
    seen = {}
    for word in word_tokenize(clean_caption(caption)):
        match = word_to_synset(word)
        if match is not None and match[0] not in seen:
            seen[match[0]] = match[1]
    return list(seen.items())


def caption_to_synsets(caption):
    """The synset keys of a caption, unique, in order of appearance.

    Example:
    >>> caption_to_synsets("An image of black dogs.")
    ['n5928118', 'n4960277', 'n2084071']
    """
    return [key for key, _ in caption_synsets_with_lemmas(caption)]
