"""Caption label sets, document frequencies and their CLI commands."""

import csv
import json
import random

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_superclass.cli.main import main as cli_main
from keras_superclass.data.document_frequency import (
    compute_document_frequencies,
)
from keras_superclass.data.document_frequency import iter_captions
from keras_superclass.data.document_frequency import save_document_frequencies
from keras_superclass.data.labels import caption_token_set
from keras_superclass.data.labels import caption_token_sets
from keras_superclass.data.labels import make_label_fn
from keras_superclass.data.tokenizers import get_tokenizer
from keras_superclass.data.tokenizers import load_tokenizer
from keras_superclass.data.tokenizers import train_tokenizer
from keras_superclass.losses import SuperClassLoss
from keras_superclass.losses import fixed_idf_weights
from keras_superclass.losses import load_document_frequencies


def _python_set(ids, exclude, max_labels):
    out = []
    for i in ids:
        if i >= 0 and i not in exclude and i not in out:
            out.append(i)
    return out[:max_labels], max(0, len(out) - max_labels)


def test_caption_token_set_semantics():
    ids = [49406, 320, 2368, 320, 539, 2368, 0, 49407, 0, 0]
    labels, dropped = caption_token_set(
        ids, max_labels=5, exclude_ids=(0, 49406, 49407), return_truncated=True
    )
    assert labels.dtype == tf.int32
    assert labels.numpy().tolist() == [320, 2368, 539, -1, -1]
    assert int(dropped) == 0
    labels, dropped = caption_token_set(
        [5, 4, 4, 3, 2, 1], max_labels=3, pad_id=-7, return_truncated=True
    )
    assert labels.numpy().tolist() == [5, 4, 3]
    assert int(dropped) == 2
    empty = caption_token_set(tf.constant([], tf.int32), max_labels=2)
    assert empty.numpy().tolist() == [-1, -1]


def test_caption_token_sets_match_python_and_tf_data():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 12, size=(64, 20)).astype("int32")
    exclude = {0, 11}
    labels, dropped = caption_token_sets(
        ids, max_labels=6, exclude_ids=exclude, return_truncated=True
    )
    for row, label, drop in zip(ids, labels.numpy(), dropped.numpy()):
        expected, expected_drop = _python_set(row.tolist(), exclude, 6)
        assert label.tolist() == expected + [-1] * (6 - len(expected))
        assert drop == expected_drop
    # Per example inside a tf.data map graph; ragged batches too.
    dataset = tf.data.Dataset.from_tensor_slices(ids).map(
        lambda x: caption_token_set(x, 6, exclude_ids=exclude)
    )
    per_example = np.stack(list(dataset.as_numpy_iterator()))
    np.testing.assert_array_equal(per_example, labels.numpy())
    ragged = tf.ragged.constant([[3, 3, 1], [], [2]])
    assert caption_token_sets(ragged, 2).numpy().tolist() == [
        [3, 1],
        [-1, -1],
        [2, -1],
    ]


def test_make_label_fn_clip_in_tf_data():
    tokenizer = get_tokenizer("clip")
    captions = ["A cat and a cat!", "", "dog " * 100, "!!"]
    label_fn = make_label_fn(tokenizer, max_labels=8)
    dataset = tf.data.Dataset.from_tensor_slices(captions).map(label_fn)
    labels = np.stack(list(dataset.as_numpy_iterator()))
    assert labels.shape == (4, 8) and labels.dtype == np.int32
    special = set(tokenizer.special_token_ids)
    for caption, label in zip(captions, labels):
        ids = tokenizer.encode(caption)
        expected, _ = _python_set(ids, special, 8)
        assert label.tolist() == expected + [-1] * (8 - len(expected))
    assert labels[1].tolist() == [-1] * 8
    assert labels[2].tolist()[:2] == [1929, -1]  # "dog" x75, truncated.
    # Batched form equals per-example form.
    batched = label_fn(tf.constant(captions)).numpy()
    np.testing.assert_array_equal(batched, labels)


def test_make_label_fn_trained_tokenizer():
    captions = ["a red cat", "a blue dog", "the cat"] * 5
    tokenizer = train_tokenizer("wordpiece", captions, vocabulary_size=40)
    label_fn = make_label_fn(tokenizer, max_labels=4)
    dataset = tf.data.Dataset.from_tensor_slices(["a cat a cat zzz"])
    label = next(dataset.map(label_fn).as_numpy_iterator()).tolist()
    assert tokenizer.id_to_token(label[0]) == "a"
    assert tokenizer.id_to_token(label[1]) == "cat"
    assert not set(label) & set(tokenizer.special_token_ids)
    # Eager call (keras-hub's pure-Python path) gives the same labels.
    assert label_fn(tf.constant("a cat a cat zzz")).numpy().tolist() == label


def _corpus(n=400, seed=0):
    rng = random.Random(seed)
    words = "a the cat dog red blue on under photo of café 東京 !".split()
    return [
        " ".join(rng.choice(words) for _ in range(rng.randint(0, 12)))
        for _ in range(n)
    ]


def test_document_frequencies_match_python_count():
    corpus = _corpus()
    tokenizer = get_tokenizer("clip")
    df, n = compute_document_frequencies(
        corpus, tokenizer, batch_size=64, show_progress=False
    )
    special = set(tokenizer.special_token_ids)
    expected = np.zeros(tokenizer.vocabulary_size(), np.int64)
    for caption in corpus:
        for i in set(tokenizer.encode(caption)) - special:
            expected[i] += 1
    assert df.dtype == np.int64 and n == len(corpus)
    np.testing.assert_array_equal(df, expected)
    assert df[list(special)].sum() == 0 and df.max() > 100
    # A dataset of dicts (the readers' elements) gives the same table.
    dataset = tf.data.Dataset.from_tensor_slices({"caption": corpus})
    df2, n2 = compute_document_frequencies(
        dataset, tokenizer, batch_size=100, show_progress=False
    )
    np.testing.assert_array_equal(df2, df)
    assert n2 == n


def test_document_frequencies_word_tokenizer():
    corpus = _corpus(100)
    tokenizer = train_tokenizer("word", corpus, vocabulary_size=8)
    df, n = compute_document_frequencies(
        iter(corpus), tokenizer, batch_size=7, show_progress=False
    )
    vocab = tokenizer.get_vocabulary()
    for word in vocab[2:]:
        expected = sum(word in caption.lower().split() for caption in corpus)
        assert df[vocab.index(word)] == expected, word
    assert df[0] == 0 and df[1] == 0 and n == 100


@pytest.mark.parametrize("suffix", [".json", ".npz"])
def test_saved_table_drives_fixed_idf_loss(tmp_path, suffix):
    corpus = _corpus(50)
    tokenizer = get_tokenizer("clip")
    df, n = compute_document_frequencies(corpus, tokenizer, show_progress=False)
    path = str(tmp_path / f"df{suffix}")
    save_document_frequencies(path, df, n, tokenizer_kind="clip")
    loaded_df, loaded_n = load_document_frequencies(path)
    np.testing.assert_array_equal(loaded_df, df)
    assert loaded_n == n
    if suffix == ".json":
        with open(path) as f:
            table = json.load(f)
        assert table["tokenizer_kind"] == "clip"
        assert table["vocabulary_size"] == 49408
    loss = SuperClassLoss(
        vocabulary_size=49408,
        idf="fixed",
        document_frequencies=path,
        ignore_ids=tokenizer.special_token_ids,
    )
    np.testing.assert_allclose(loss.fixed_weights, fixed_idf_weights(df, n))
    labels = make_label_fn(tokenizer, max_labels=16)(tf.constant(corpus[:4]))
    logits = np.zeros((4, 49408), "float32")
    value = keras.ops.convert_to_numpy(
        loss(keras.ops.convert_to_tensor(labels.numpy()), logits)
    )
    np.testing.assert_allclose(value, np.log(49408), rtol=1e-5)
    with pytest.raises(ValueError, match="num_documents"):
        save_document_frequencies(path, df, 1)


def _write_tfrecord(path, captions, corrupt=False):
    with tf.io.TFRecordWriter(path) as writer:
        for i, caption in enumerate(captions):
            feature = {
                "image": tf.train.Feature(
                    bytes_list=tf.train.BytesList(value=[b"\xff\xd8"])
                ),
                "key": tf.train.Feature(
                    bytes_list=tf.train.BytesList(value=[str(i).encode()])
                ),
                "width": tf.train.Feature(
                    int64_list=tf.train.Int64List(value=[32])
                ),
            }
            if caption is not None:
                feature["caption"] = tf.train.Feature(
                    bytes_list=tf.train.BytesList(value=[caption.encode()])
                )
            example = tf.train.Example(
                features=tf.train.Features(feature=feature)
            )
            writer.write(example.SerializeToString())
        writer.write(b"not an example proto \xff\xff")
    if corrupt:
        with open(path, "ab") as f:
            # A record header with a bad checksum, then a truncated body.
            f.write(b"\x10" + b"\x00" * 11 + b"abc")


def test_iter_captions_formats(tmp_path):
    captions = ["a cat", "Café, 東京", ""]
    (tmp_path / "c.txt").write_text("\n".join(captions) + "\n", "utf-8")
    with open(tmp_path / "c.jsonl", "w", encoding="utf-8") as f:
        for c in captions:
            f.write(json.dumps({"caption": c, "url": "x"}) + "\n")
        f.write("{broken json\n")
    with open(tmp_path / "c.csv", "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["url", "caption"])
        writer.writerows([["x", c] for c in captions])
    for name, skipped in (("c.txt", 0), ("c.jsonl", 1), ("c.csv", 0)):
        source = iter_captions(str(tmp_path / name))
        assert list(source) == captions, name
        assert source.num_skipped == skipped
    _write_tfrecord(str(tmp_path / "s-0.tfrecord"), ["a cat", None, "dog"])
    _write_tfrecord(str(tmp_path / "s-1.tfrecord"), ["東京"], corrupt=True)
    source = iter_captions(str(tmp_path / "s-*.tfrecord"))
    assert list(source) == ["a cat", "dog", "東京"]
    # Missing caption, 2 non-Example records, 1 corrupt tail.
    assert source.num_skipped == 4
    with pytest.raises(FileNotFoundError, match="No file matches"):
        iter_captions(str(tmp_path / "none-*.tfrecord"))
    with pytest.raises(ValueError, match="no column"):
        list(iter_captions(str(tmp_path / "c.csv"), caption_column="text"))


def test_cli_vocab_and_df(tmp_path, capsys):
    corpus = _corpus(120)
    _write_tfrecord(str(tmp_path / "train-0.tfrecord"), corpus[:60])
    _write_tfrecord(str(tmp_path / "train-1.tfrecord"), corpus[60:])
    shards = str(tmp_path / "train-*.tfrecord")
    out = tmp_path / "vocab"
    code = cli_main(
        ["vocab", "--kind", "word", "--captions", shards, "--size", "10"]
        + ["--min-count", "2", "--out", str(out)]
    )
    assert code == 0
    assert "2 records skipped" in capsys.readouterr().out
    tokenizer = load_tokenizer(str(out))
    assert tokenizer.kind == "word" and tokenizer.vocabulary_size() == 10
    table = tmp_path / "df.json"
    code = cli_main(
        ["df", "--tokenizer", str(out), "--captions", shards]
        + ["--out", str(table), "--quiet"]
    )
    assert code == 0
    df, n = load_document_frequencies(str(table))
    expected, _ = compute_document_frequencies(
        corpus, tokenizer, show_progress=False
    )
    np.testing.assert_array_equal(df, expected)
    assert n == 120
    with open(table) as f:
        assert json.load(f)["metadata"]["records_skipped"] == 2
    code = cli_main(
        ["df", "--captions", str(tmp_path / "missing.txt")]
        + ["--out", str(table)]
    )
    assert code == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_vocab_and_df_read_several_caption_files(tmp_path):
    corpus = _corpus(40)
    for name, part in (("a.txt", corpus[:25]), ("b.txt", corpus[25:])):
        (tmp_path / name).write_text("\n".join(part) + "\n", "utf-8")
    files = [str(tmp_path / "a.txt"), str(tmp_path / "b.txt")]
    out = tmp_path / "vocab"
    code = cli_main(
        ["vocab", "--kind", "word", "--captions", *files, "--size", "10"]
        + ["--out", str(out)]
    )
    assert code == 0
    table = tmp_path / "df.json"
    code = cli_main(
        ["df", "--tokenizer", str(out), "--captions", *files]
        + ["--out", str(table), "--quiet"]
    )
    assert code == 0
    assert load_document_frequencies(str(table))[1] == 40
