"""CatLIP synset labels: corenet's golden cases, vocabulary, CLI."""

import json
import os
import pickle

import numpy as np
import pytest

from keras_superclass.cli.main import main as cli_main
from keras_superclass.data import synsets

try:
    synsets.check_wordnet()
    HAVE_WORDNET = True
except RuntimeError:
    HAVE_WORDNET = False

pytestmark = pytest.mark.skipif(
    not HAVE_WORDNET,
    reason="WordNet for NLTK is not installed; run scripts/install_wordnet.sh",
)

IMAGE, STOCK, BLACK, DOG = "n5928118", "n13333833", "n4960277", "n2084071"

# The vocabulary of corenet's wordnet-tagged dataset test (no dog in it).
CORENET_VOCAB = [
    IMAGE,
    STOCK,
    BLACK,
    "n7947958",
    "n9638875",
    "n928077",
    "n7996689",
    "n10787470",
    "n5938976",
    "n8559508",
]


def test_clean_caption_matches_corenet_steps():
    assert synsets.clean_caption("An+image%20of  a <b>Black</b> DOG.\n") == (
        "an image of a black dog."
    )
    # ftfy repairs mojibake; only leading/trailing newlines are removed.
    assert synsets.clean_caption("\nCafÃ©  time\n") == "café time"
    assert synsets.clean_caption("a\nb") == "a\nb"


def test_word_tokenize_matches_nltk_on_golden_caption():
    # What `nltk.word_tokenize` (Punkt + NLTKWordTokenizer) returns.
    assert synsets.word_tokenize("an image of black dog.") == [
        "an",
        "image",
        "of",
        "black",
        "dog",
        ".",
    ]
    # Sentence ends are split per sentence, as with Punkt.
    assert synsets.word_tokenize("a dog. a cat!") == [
        "a",
        "dog",
        ".",
        "a",
        "cat",
        "!",
    ]
    assert synsets.word_tokenize("dogs aren't cats, ok") == [
        "dogs",
        "are",
        "n't",
        "cats",
        ",",
        "ok",
    ]


def test_word_tokenize_equals_nltk_when_punkt_is_installed():
    import nltk

    try:
        nltk.data.find("tokenizers/punkt_tab/english/")
    except LookupError:
        pytest.skip("NLTK punkt_tab data is not installed (a download)")
    for text in [
        "an image of black dog.",
        "two dogs. a cat on a mat... the end!",
        "dogs' toys aren't cheap, are they? \"yes\"",
    ]:
        assert synsets.word_tokenize(text) == nltk.word_tokenize(text)


def test_corenet_golden_case():
    vocab = synsets.SynsetVocabulary(CORENET_VOCAB)
    caption = "An image of black dog."
    assert synsets.caption_to_synsets(caption) == [IMAGE, BLACK, DOG]
    assert vocab.labels(caption) == [0, 2]
    expected = np.array([1, 0, 1, 0, 0, 0, 0, 0, 0, 0], dtype="float32")
    np.testing.assert_array_equal(vocab.multi_hot(caption), expected)


def test_lemmatisation_and_name_check():
    # Plurals lemmatize to the singular noun.
    assert synsets.word_to_synset("dogs") == (DOG, "dog")
    assert synsets.caption_to_synsets("Dogs and mice") == [
        DOG,
        synsets.word_to_synset("mouse")[0],
    ]
    # "photo" -> photograph.n.01: the name differs, so it is dropped.
    assert synsets.word_to_synset("photo") is None
    # "an" -> associate_in_nursing.n.01: dropped as well.
    assert synsets.word_to_synset("an") is None
    # Not a noun at all.
    assert synsets.word_to_synset("of") is None
    # Duplicates collapse, first-seen order is kept.
    assert synsets.caption_to_synsets("dog, dogs, image, dog") == [DOG, IMAGE]


def test_no_match_gives_empty_labels():
    vocab = synsets.SynsetVocabulary(CORENET_VOCAB)
    assert vocab.labels("a photo of it") == []
    assert vocab.labels("") == []
    assert not vocab.multi_hot("a photo of it").any()


def test_build_vocabulary_counts_threshold_and_order():
    captions = (
        ["a dog and a dog"] * 4  # dog: 4 captions (once per caption)
        + ["black cat"] * 3  # black, cat: 3
        + ["an image"] * 2  # image: 2
        + ["a photo of grass"]  # grass: 1; photo dropped
    )
    vocab = synsets.build_synset_vocabulary(
        captions, min_count=1, max_size=10, workers=1, show_progress=False
    )
    assert vocab.keys[0] == DOG
    assert vocab.entries[0] == {"key": DOG, "lemma": "dog", "count": 4}
    # Ties ordered by key; "grass" (count 1) is not > min_count.
    cat = synsets.word_to_synset("cat")[0]
    assert vocab.keys[1:] == sorted([BLACK, cat]) + [IMAGE]
    assert [e["count"] for e in vocab.entries] == [4, 3, 3, 2]
    top2 = synsets.build_synset_vocabulary(
        captions, min_count=2, max_size=2, workers=1, show_progress=False
    )
    assert top2.keys == vocab.keys[:2]


def test_parallel_equals_serial(tmp_path):
    captions = [
        f"photo {i}: a black dog with {i % 5} cats on the grass near a tree"
        if i % 3
        else "an image of a house"
        for i in range(300)
    ]
    serial = synsets.build_synset_vocabulary(
        captions, min_count=0, workers=1, show_progress=False
    )
    parallel = synsets.build_synset_vocabulary(
        iter(captions),
        min_count=0,
        workers=2,
        chunk_size=37,
        show_progress=False,
    )
    assert parallel.entries == serial.entries
    labels = synsets.synset_labels_for_captions(
        captions, serial, workers=2, chunk_size=23
    )
    assert labels == [serial.labels(c) for c in captions]


def test_vocabulary_save_load_round_trip(tmp_path):
    vocab = synsets.build_synset_vocabulary(
        ["black dog", "black cat", "dog"],
        min_count=0,
        workers=1,
        show_progress=False,
    )
    path = tmp_path / "sub" / "vocab.json"
    vocab.save(path)
    assert sorted(os.listdir(tmp_path / "sub")) == ["vocab.json"]
    with open(path) as f:
        raw = json.load(f)
    # Tied counts are ordered by key: dog (n2084071) before black.
    assert raw[0] == {"key": DOG, "lemma": "dog", "count": 2}
    loaded = synsets.SynsetVocabulary.load(path)
    assert loaded.entries == vocab.entries
    assert loaded.labels("a dog") == vocab.labels("a dog")
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(ValueError, match="not a synset vocabulary"):
        synsets.SynsetVocabulary.load(bad)


def test_extra_features_fn_for_the_shard_writer():
    fn = synsets.synset_extra_features_fn(
        synsets.SynsetVocabulary(CORENET_VOCAB)
    )
    assert fn("An image of black dog.") == {"synsets": [0, 2]}
    assert fn("nothing here") == {"synsets": []}
    # Shard writers may run it in worker processes.
    clone = pickle.loads(pickle.dumps(fn))
    assert clone("black stock") == {"synsets": [2, 1]}


def test_labels_cache(tmp_path, monkeypatch):
    vocab = synsets.SynsetVocabulary(CORENET_VOCAB)
    captions = ["An image of black dog.", "a photo", "stock image"]
    cache = tmp_path / "labels.json"
    first = synsets.synset_labels_for_captions(
        captions, vocab, workers=1, cache_path=cache
    )
    assert first == [[0, 2], [], [1, 0]]
    assert cache.exists()

    # A hit never recomputes.
    def fail(*args):
        raise AssertionError("recomputed despite a valid cache")

    monkeypatch.setattr(synsets.SynsetVocabulary, "labels", fail)
    assert (
        synsets.synset_labels_for_captions(
            captions, vocab, workers=1, cache_path=cache
        )
        == first
    )
    # Other captions or another vocabulary invalidate it.
    with pytest.raises(AssertionError, match="recomputed"):
        synsets.synset_labels_for_captions(
            captions[:2], vocab, workers=1, cache_path=cache
        )
    with pytest.raises(AssertionError, match="recomputed"):
        synsets.synset_labels_for_captions(
            captions,
            synsets.SynsetVocabulary(CORENET_VOCAB[::-1]),
            workers=1,
            cache_path=cache,
        )


def _write_tfrecord(path, captions):
    import tensorflow as tf

    with tf.io.TFRecordWriter(str(path)) as writer:
        for caption in captions:
            feature = {
                "caption": tf.train.Feature(
                    bytes_list=tf.train.BytesList(
                        value=[caption.encode("utf-8")]
                    )
                )
            }
            example = tf.train.Example(
                features=tf.train.Features(feature=feature)
            )
            writer.write(example.SerializeToString())


def test_read_captions_text_jsonl_tfrecord(tmp_path):
    (tmp_path / "a.txt").write_text("black dog\n\nan image\n")
    (tmp_path / "b.jsonl").write_text(
        json.dumps({"caption": "two dogs", "url": "x"}) + "\n"
    )
    _write_tfrecord(tmp_path / "c-0.tfrecord", ["a cat", "grass"])
    _write_tfrecord(tmp_path / "c-1.tfrecord", ["a tree"])
    assert list(synsets.read_captions(str(tmp_path / "a.txt"))) == [
        "black dog",
        "an image",
    ]
    assert list(synsets.read_captions(tmp_path / "b.jsonl")) == ["two dogs"]
    assert list(synsets.read_captions(str(tmp_path / "c-*.tfrecord"))) == [
        "a cat",
        "grass",
        "a tree",
    ]
    with pytest.raises(ValueError, match="no 'text' field"):
        list(synsets.read_captions(tmp_path / "b.jsonl", column="text"))
    with pytest.raises(FileNotFoundError, match="No file matches"):
        list(synsets.read_captions(str(tmp_path / "none-*.txt")))


def test_read_captions_gzipped_jsonl(tmp_path):
    import gzip

    path = tmp_path / "c.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write(json.dumps({"text": "black dog"}) + "\n\n  \n")
        f.write(json.dumps({"text": "an image"}) + "\n")
    assert list(synsets.read_captions(path, column="text")) == [
        "black dog",
        "an image",
    ]
    # Through the CLI, with the flag's old name still accepted.
    out = tmp_path / "vocab.json"
    for flag in ("--caption-column", "--column"):
        code = cli_main(
            ["synsets", "--captions", str(path), flag, "text"]
            + ["--min-count", "0", "--workers", "1", "--quiet"]
            + ["--out", str(out)]
        )
        assert code == 0
        keys = synsets.SynsetVocabulary.load(out).keys
        assert {BLACK, DOG, IMAGE} <= set(keys)


def test_bad_json_line_names_file_and_line(tmp_path, capsys):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"caption": "a dog"}) + "\n\n{broken\n")
    with pytest.raises(ValueError, match=r"c\.jsonl:3 is not a JSON line"):
        list(synsets.read_captions(path))
    code = cli_main(
        ["synsets", "--captions", str(path), "--workers", "1", "--quiet"]
        + ["--out", str(tmp_path / "vocab.json")]
    )
    assert code == 2
    error = capsys.readouterr().err
    assert "c.jsonl:3 is not a JSON line" in error
    assert "'{broken'" in error


def test_cli_synsets(tmp_path, capsys):
    captions = tmp_path / "captions.txt"
    captions.write_text("black dog\nblack dogs\nan image of a dog\na photo\n")
    out = tmp_path / "vocab.json"
    code = cli_main(
        [
            "synsets",
            "--captions",
            str(captions),
            "--min-count",
            "1",
            "--max-size",
            "24320",
            "--workers",
            "1",
            "--quiet",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    vocab = synsets.SynsetVocabulary.load(out)
    assert vocab.entries == [
        {"key": DOG, "lemma": "dog", "count": 3},
        {"key": BLACK, "lemma": "black", "count": 2},
    ]
    code = cli_main(
        ["synsets", "--captions", str(captions), "--out", str(out), "--quiet"]
    )
    assert code == 2
    assert "lower --min-count" in capsys.readouterr().err
    code = cli_main(
        ["synsets", "--captions", str(tmp_path / "x.txt"), "--out", str(out)]
    )
    assert code == 2


def test_cli_shards_store_synset_labels(tmp_path, capsys):
    import tensorflow as tf
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    captions = ["a black dog", "an image of two dogs", "a tree", "???"]
    rows = ["file,caption"]
    for i, caption in enumerate(captions):
        Image.new("RGB", (8, 8), (i, 0, 0)).save(images / f"{i}.png")
        rows.append(f"{i}.png,{caption}")
    (tmp_path / "c.csv").write_text("\n".join(rows) + "\n")
    vocab = synsets.SynsetVocabulary([DOG, BLACK, IMAGE])
    vocab.save(tmp_path / "vocab.json")
    out = tmp_path / "out"
    args = ["shards", "--images", str(images), "--captions"]
    args += [str(tmp_path / "c.csv"), "--out", str(out), "--quiet"]
    code = cli_main(
        args + ["--synset-vocabulary", str(tmp_path / "vocab.json")]
    )
    assert code == 0
    labels = {}
    for name in os.listdir(out):
        if name.endswith(".tfrecord"):
            for raw in tf.compat.v1.io.tf_record_iterator(str(out / name)):
                feature = tf.train.Example.FromString(raw).features.feature
                caption = feature["caption"].bytes_list.value[0].decode()
                labels[caption] = list(feature["synsets"].int64_list.value)
    assert labels == {c: vocab.labels(c) for c in captions}
    assert labels["a black dog"] == [1, 0]  # black, dog
    assert labels["an image of two dogs"] == [2, 0]  # image, dog
    assert labels["a tree"] == [] and labels["???"] == []
    with open(out / "manifest.json") as f:
        assert json.load(f)["extra_features"] == ["synsets"]

    # Shards of another vocabulary are not mixed into these.
    synsets.SynsetVocabulary([DOG]).save(tmp_path / "other.json")
    code = cli_main(
        args + ["--synset-vocabulary", str(tmp_path / "other.json")]
    )
    assert code == 2
    assert "other arguments" in capsys.readouterr().err
    code = cli_main(args + ["--synset-vocabulary", str(tmp_path / "no.json")])
    assert code == 2
    assert "keras-superclass synsets" in capsys.readouterr().err
