"""Caption tokenizers: CLIP parity with OpenCLIP, training, saving."""

import argparse
import importlib.util
import json
import os
import random
import shlex
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_superclass
from keras_superclass.cli import vocab as vocab_cli
from keras_superclass.data.tokenizers import CLIPTokenizer
from keras_superclass.data.tokenizers import SentencePieceTokenizer
from keras_superclass.data.tokenizers import WordPieceTokenizer
from keras_superclass.data.tokenizers import WordTokenizer
from keras_superclass.data.tokenizers import get_tokenizer
from keras_superclass.data.tokenizers import load_tokenizer
from keras_superclass.data.tokenizers import train_tokenizer
from keras_superclass.data.tokenizers.clip_tokenizer import BPE_FILENAME
from keras_superclass.data.tokenizers.clip_tokenizer import clean_caption
from keras_superclass.data.tokenizers.clip_tokenizer import default_bpe_path


def _open_clip_file(name):
    """Path of `name` inside the installed `open_clip` (found, not imported),
    or `None` without open_clip_torch."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(spec.submodule_search_locations[0], name)
    return path if os.path.exists(path) else None


def _reference_tokenizer_module():
    """OpenCLIP's `tokenizer.py`, loaded alone.

    Importing the `open_clip` package pulls in torchvision, which crashes
    when TensorFlow is already loaded; its tokenizer module only needs
    torch, ftfy and regex.
    """
    path = _open_clip_file("tokenizer.py")
    if path is None:
        pytest.skip("open_clip_torch (the reference) is not installed")
    module_spec = importlib.util.spec_from_file_location(
        "_open_clip_reference_tokenizer", path
    )
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


WORDS = (
    "a photo of the cat dog sitting on red blue table with man woman "
    "people street car house beautiful sunset over mountains lake river "
    "city night I'm we'll it's they've don't you'd SHE'S Hello WORLD"
).split()
PIECES = [
    "café",
    "naïve",
    "crème brûlée",
    "São Paulo",
    "Ångström",
    "İstanbul",
    "straße",
    "東京の夜景",
    "北京烤鸭",
    "서울",
    "Москва",
    "Αθήνα",
    "مرحبا",
    "हिन्दी",
    "🐱",
    "🌃🌉",
    "👩‍👩‍👧",
    "🇯🇵",
    "&amp;",
    "&lt;b&gt;bold&lt;/b&gt;",
    "&amp;amp;",
    "&quot;quoted&quot;",
    "&#39;",
    "&#x27;s",
    "&nbsp;",
    "&eacute;",
    "<b>tag</b>",
    "https://example.com/a/b?c=1&d=2",
    "www.test.org/path_x",
    "user@mail.com",
    "3.14159",
    "1,000,000",
    "2024-01-31",
    "#hashtag",
    "@mention",
    "!!!",
    "?!",
    "...",
    "--",
    "(paren)",
    "[brackets]",
    "{braces}",
    "'single'",
    '"double"',
    "“curly”",
    "‘curly’",
    "—",
    "…",
    "ﬁne ﬂow",
    "ＬＯＵＤ",
    "cafÃ©",
    "Ã¢â‚¬â„¢",
    "\t",
    "\n",
    "  ",
    "\u00a0",
    "\u3000",
    "\u200b",
    "\x00",
    "\x1b[31mred\x1b[0m",
    "\r\n",
    "<start_of_text>",
    "<END_OF_TEXT>",
    "x²",
    "½",
    "Ⅻ",
    "٣",
    "a\u0301",
    "$19.99",
    "50%",
    "C++",
    "e.g.",
    "___",
    "^_^",
    ":)",
]


def _varied_captions(n, seed=0):
    rng = random.Random(seed)
    captions = ["", " ", "\n\t", "a", "A photo of a cat."]
    captions.append(" ".join(rng.choice(WORDS) for _ in range(120)))
    captions.append("".join(rng.choice(PIECES) for _ in range(60)))
    captions.append("supercalifragilistic" * 12)
    while len(captions) < n:
        parts = []
        for _ in range(rng.randint(1, 25)):
            source = PIECES if rng.random() < 0.35 else WORDS
            parts.append(rng.choice(source))
        separator = rng.choice([" ", " ", " ", "", "  ", ", "])
        captions.append(separator.join(parts))
    return captions


@pytest.fixture(scope="module")
def reference_module():
    return _reference_tokenizer_module()


@pytest.fixture(scope="module")
def reference(reference_module):
    return reference_module.SimpleTokenizer()


@pytest.fixture(scope="module")
def clip():
    return CLIPTokenizer()


def test_clip_matches_open_clip_in_tf_data(reference_module, clip):
    captions = _varied_captions(1200)
    expected = reference_module.tokenize(captions).numpy()
    # Per caption inside a tf.data map graph, then batched.
    dataset = tf.data.Dataset.from_tensor_slices(captions)
    dataset = dataset.map(clip.tokenize, num_parallel_calls=tf.data.AUTOTUNE)
    per_caption = np.concatenate(
        [b for b in dataset.batch(400).as_numpy_iterator()]
    )
    # Whole batches inside the graph.
    batched = tf.data.Dataset.from_tensor_slices(captions).batch(256)
    batched = batched.map(clip.tokenize)
    batched = np.concatenate(list(batched.as_numpy_iterator()))
    assert per_caption.dtype == np.int32
    assert per_caption.shape == (len(captions), 77)
    for got in (per_caption, batched):
        mismatch = np.nonzero((got != expected).any(axis=1))[0]
        assert mismatch.size == 0, [captions[i] for i in mismatch[:5]]
    # The corpus exercises truncation, padding and non-ASCII cleaning.
    lengths = (expected != 0).sum(axis=1)
    assert (lengths == 77).sum() >= 5 and (lengths == 2).sum() >= 3
    assert (expected[lengths == 77, -1] == 49407).all()


def test_clip_cleaning_fast_path_matches_ftfy(reference):
    import html

    import ftfy

    rng = random.Random(1)
    alphabet = [chr(c) for c in range(32, 127)] + ["&amp;", "&lt;", "&#39;"]
    for _ in range(500):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        slow = ftfy.fix_text(text)
        slow = html.unescape(html.unescape(slow))
        slow = " ".join(slow.split()).lower()
        assert clean_caption(text) == slow, text


def test_clip_unpadded_and_eager(reference, clip):
    captions = ["A cat & a dog!", "東京 🌃", ""]
    ragged = get_tokenizer("clip", sequence_length=None).tokenize(captions)
    assert isinstance(ragged, tf.RaggedTensor)
    for caption, ids in zip(captions, ragged.to_list()):
        assert ids == [49406, *reference.encode(caption), 49407]
    # Layer call on the active backend.
    out = clip(captions)
    assert tuple(out.shape) == (3, 77)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(out), reference(captions).numpy()
    )
    assert clip.vocabulary_size() == 49408
    assert sorted(clip.special_token_ids) == [0, 49406, 49407]
    assert clip.id_to_token(320) == "a</w>"
    assert clip.token_to_id("a</w>") == 320
    text = clip.detokenize(clip.tokenize("A photo of a cat."))
    assert text.numpy().decode() == "a photo of a cat ."
    # One token as readable text (SuperClass's labels), against OpenCLIP's
    # decoder: whole characters decode, a lone byte keeps its symbol.
    for word in ("cat", "―", "東京"):
        for token in reference.encode(word):
            if clip.id_to_token(token).isascii():
                continue
            expected = reference.decode([token]).strip()
            if "\ufffd" in expected:
                symbol = clip.id_to_token(token).replace("</w>", "")
                assert clip.token_text(token) == symbol
            else:
                assert clip.token_text(token) == expected != ""
    assert clip.token_text(2368) == "cat"  # "cat</w>"
    (dash,) = reference.encode("―")
    assert clip.token_text(dash) == "―" != clip.id_to_token(dash)
    from keras_superclass.models import SuperClassPreprocessor

    assert SuperClassPreprocessor(tokenizer=clip).id_to_label(dash) == "―"


def test_clip_save_load_preset(tmp_path, clip):
    clip.save_to_preset(str(tmp_path))
    with open(tmp_path / "tokenizer.json") as f:
        config = json.load(f)
    assert config["registered_name"] == "keras_superclass>CLIPTokenizer"
    assert (tmp_path / "assets/tokenizer/bpe_simple_vocab_16e6.txt.gz").exists()
    loaded = load_tokenizer(str(tmp_path))
    assert isinstance(loaded, CLIPTokenizer)
    assert loaded.vocabulary_path.startswith(str(tmp_path))
    caption = "Round trip: café & 東京!"
    np.testing.assert_array_equal(
        loaded.tokenize(caption).numpy(), clip.tokenize(caption).numpy()
    )
    assert load_tokenizer("clip").sequence_length == 77


# Runs in a fresh interpreter in which `open_clip` can be neither imported
# nor found, then prints the ids of the captions in argv as JSON.
_NO_OPEN_CLIP_SCRIPT = textwrap.dedent(
    """
    import importlib.abc
    import json
    import sys


    class BlockOpenClip(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "open_clip":
                raise ModuleNotFoundError(f"{name} is blocked", name=name)
            return None


    sys.meta_path.insert(0, BlockOpenClip())
    try:
        import open_clip  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("open_clip is importable")

    from keras_superclass.data.tokenizers import get_tokenizer
    from keras_superclass.data.tokenizers.clip_tokenizer import (
        default_bpe_path,
    )

    tokenizer = get_tokenizer("clip", sequence_length=None)
    ids = tokenizer.tokenize(sys.argv[1:]).to_list()
    print(json.dumps({"path": default_bpe_path(), "ids": ids}))
    """
)


def test_clip_works_without_open_clip():
    captions = ["A photo of a cat.", "a dog", "Café & 東京 at night!", ""]
    root = os.path.dirname(os.path.dirname(keras_superclass.__file__))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (root, env.get("PYTHONPATH")) if p
    )
    result = subprocess.run(
        [sys.executable, "-c", _NO_OPEN_CLIP_SCRIPT, *captions],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    package = os.path.dirname(keras_superclass.__file__)
    assert out["path"].startswith(package)
    ids = out["ids"]
    # Facts of the reference: SOT/EOT and the ids of simple words.
    assert ids[0] == [49406, 320, 1125, 539, 320, 2368, 269, 49407]
    assert ids[1] == [49406, 320, 1929, 49407]
    assert ids[3] == [49406, 49407]
    assert all(r[0] == 49406 and r[-1] == 49407 for r in ids)
    if _open_clip_file("tokenizer.py") is not None:
        reference = _reference_tokenizer_module().SimpleTokenizer()
        for caption, row in zip(captions, ids):
            assert row == [49406, *reference.encode(caption), 49407]


def test_packaged_bpe_file_equals_open_clip_copy():
    assert default_bpe_path().startswith(
        os.path.dirname(keras_superclass.__file__)
    )
    theirs = _open_clip_file(BPE_FILENAME)
    if theirs is None:
        pytest.skip("open_clip_torch is not installed: nothing to compare")
    with open(default_bpe_path(), "rb") as f, open(theirs, "rb") as g:
        assert f.read() == g.read()


def test_clip_missing_vocabulary_is_a_clear_error(tmp_path):
    tokenizer = CLIPTokenizer(vocabulary=str(tmp_path / "missing.txt.gz"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        tokenizer.tokenize("a cat")


# A small caption corpus for the trained tokenizers.
CORPUS_WORDS = (
    "a the cat dog bird sits runs flies on under over red blue green "
    "table chair tree park beach photo of with small large two three "
    "café naïve 東京"
).split()


def _corpus(n=300, seed=0):
    rng = random.Random(seed)
    return [
        " ".join(rng.choice(CORPUS_WORDS) for _ in range(rng.randint(3, 10)))
        + rng.choice(["", ".", "!", ","])
        for _ in range(n)
    ]


def _graph_ids(tokenizer, captions):
    dataset = tf.data.Dataset.from_tensor_slices(captions)
    dataset = dataset.map(tokenizer.tokenize)
    return [ids.tolist() for ids in dataset.as_numpy_iterator()]


@pytest.mark.parametrize(
    "kind, size, cls",
    [
        ("word", 40, WordTokenizer),
        ("wordpiece", 80, WordPieceTokenizer),
        ("sentencepiece", 60, SentencePieceTokenizer),
    ],
)
def test_trained_tokenizers(tmp_path, kind, size, cls):
    corpus = _corpus()
    tokenizer = train_tokenizer(kind, corpus, vocabulary_size=size)
    assert isinstance(tokenizer, cls) and tokenizer.kind == kind
    assert 4 < tokenizer.vocabulary_size() <= size
    special = set(tokenizer.special_token_ids)
    assert special and max(special) < tokenizer.vocabulary_size()
    ids = _graph_ids(tokenizer, corpus[:20])
    flat = [i for row in ids for i in row]
    assert all(0 <= i < tokenizer.vocabulary_size() for i in flat)
    # Most tokens of in-domain captions are real (non-special) tokens.
    assert np.mean([i not in special for i in flat]) > 0.8
    # Batched (ragged) output equals per-caption output.
    batched = tokenizer.tokenize(tf.constant(corpus[:20]))
    if isinstance(batched, tf.RaggedTensor):
        batched = batched.to_list()
    assert [list(map(int, r)) for r in batched] == ids
    # Lowercased.
    assert _graph_ids(tokenizer, ["RED Cat"]) == _graph_ids(
        tokenizer, ["red cat"]
    )
    # Preset round trip.
    tokenizer.save_to_preset(str(tmp_path))
    with open(tmp_path / "tokenizer.json") as f:
        assert json.load(f)["registered_name"] == (
            f"keras_superclass>{cls.__name__}"
        )
    loaded = load_tokenizer(str(tmp_path))
    assert isinstance(loaded, cls)
    assert loaded.get_vocabulary() == tokenizer.get_vocabulary()
    assert loaded.special_token_ids == tokenizer.special_token_ids
    assert _graph_ids(loaded, corpus[:20]) == ids


def test_sentencepiece_on_too_few_captions_names_the_fix():
    with pytest.raises(ValueError, match="smaller `vocabulary_size` .`--size`"):
        SentencePieceTokenizer.train(["a red cat", "a blue dog"] * 3, 500)


def test_word_tokenizer_semantics():
    corpus = ["a cat", "a cat", "a dog", "A Dog toy", "rare"]
    tokenizer = WordTokenizer.train(corpus, vocabulary_size=10, min_count=2)
    assert tokenizer.get_vocabulary() == ["[PAD]", "[UNK]", "a", "cat", "dog"]
    ids = tokenizer.tokenize("A cat, a DOG; rare!").numpy().tolist()
    assert ids == [2, 3, 2, 4, 1]
    # Apostrophes inside words are dropped: "cat's" is the word "cats".
    assert tokenizer.tokenize("cat's").numpy().tolist() == [1]
    assert tokenizer.detokenize([2, 3, 0, 0]).numpy() == b"a cat"
    capped = WordTokenizer.train(corpus, vocabulary_size=3)
    assert capped.get_vocabulary() == ["[PAD]", "[UNK]", "a"]
    padded = WordTokenizer(tokenizer.get_vocabulary(), sequence_length=3)
    assert padded.tokenize("a cat a cat").numpy().tolist() == [2, 3, 2]
    assert padded.tokenize(["dog", ""]).numpy().tolist() == [
        [4, 0, 0],
        [0, 0, 0],
    ]
    with pytest.raises(ValueError, match=r"must start with"):
        WordTokenizer(["a", "b"])


@pytest.mark.parametrize(
    "kind, argument",
    [
        ("word", "vocabulary"),
        ("wordpiece", "vocabulary"),
        ("sentencepiece", "proto"),
    ],
)
def test_missing_vocabulary_error_names_python_and_cli_routes(kind, argument):
    tokenizer = get_tokenizer(kind)
    name = type(tokenizer).__name__
    command = (
        f"keras-superclass vocab --kind {kind} --captions "
        f"'shards/*.tfrecord' --out tok/"
    )
    calls = (lambda: tokenizer.tokenize("a cat"), tokenizer.vocabulary_size)
    for call in calls:
        with pytest.raises(ValueError) as info:
            call()
        message = str(info.value)
        assert message.startswith(f"{name} has no vocabulary")
        assert f"`{argument}=`" in message
        assert command in message and "data.tokenizer=tok/" in message
    # The command in the message is one the CLI accepts.
    parser = argparse.ArgumentParser()
    vocab_cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(shlex.split(command)[1:])
    assert (args.kind, args.captions, args.out) == (
        kind,
        ["shards/*.tfrecord"],
        "tok/",
    )


def test_factory_errors():
    with pytest.raises(ValueError, match="Unknown tokenizer kind"):
        get_tokenizer("bpe")
    with pytest.raises(ValueError, match="CLIP vocabulary is fixed"):
        train_tokenizer("clip", ["a"])
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        load_tokenizer("/nonexistent/tokenizer/dir")
