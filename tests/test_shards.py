"""Shard writer: sources, manifest counts, corrupt inputs, resume, CLI."""

import io
import json
import os
import stat
import tarfile

import keras
import numpy as np
import pytest
from PIL import Image

from keras_superclass.data import schema
from keras_superclass.data import shard_writer
from keras_superclass.data.shard_writer import read_manifest
from keras_superclass.data.shard_writer import write_shards


def _png(color=(200, 30, 30), size=(12, 8), mode="RGB"):
    out = io.BytesIO()
    Image.new(mode, size, color).save(out, format="PNG")
    return out.getvalue()


def _jpeg(size=(12, 8)):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG")
    return out.getvalue()


def _read_records(path):
    import tensorflow as tf

    out = []
    for name in sorted(os.listdir(path)):
        if name.endswith(".tfrecord"):
            for raw in tf.compat.v1.io.tf_record_iterator(
                os.path.join(path, name)
            ):
                example = tf.train.Example.FromString(raw)
                f = example.features.feature
                out.append(
                    {
                        "key": f["key"].bytes_list.value[0].decode(),
                        "caption": f["caption"].bytes_list.value[0].decode(),
                        "image": f["image"].bytes_list.value[0],
                        "width": f["width"].int64_list.value[0],
                        "height": f["height"].int64_list.value[0],
                        "extra": {
                            k: list(v.int64_list.value)
                            for k, v in f.items()
                            if k not in schema.REQUIRED_FEATURES
                        },
                    }
                )
    return out


def _folder(tmp_path):
    """5 good images + one undecodable + one missing; rows as a list."""
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    for i in range(5):
        (images / f"good{i}.png").write_bytes(_png(size=(10 + i, 8)))
    (images / "sub" / "jpg.jpg").write_bytes(_jpeg())
    (images / "bad.jpg").write_bytes(b"not an image at all")
    rows = [(f"good{i}.png", f"a red box number {i}") for i in range(5)]
    rows += [
        ("sub/jpg.jpg", "  noisy  picture "),
        ("bad.jpg", "undecodable"),
        ("missing.png", "no such file"),
        ("good0.png", "   "),  # whitespace-only caption
        ("good1.png", ""),  # empty caption
        ("good2.png", b"caf\xe9 latin-1"),  # invalid UTF-8
        ("../good0.png", "escapes the folder"),
    ]
    return images, rows


EXPECTED_SKIPPED = {
    "empty_caption": 2,
    "invalid_utf8_caption": 1,
    "missing_image": 1,
    "undecodable_image": 1,
    "unsafe_member_name": 1,
}


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_folder_with_captions_table(tmp_path, fmt):
    images, rows = _folder(tmp_path)
    table = tmp_path / f"captions.{fmt}"
    if fmt == "csv":
        lines = [b"path,text"]
        for file, caption in rows:
            if isinstance(caption, str):
                caption = caption.encode()
            lines.append(file.encode() + b',"' + caption + b'"')
        table.write_bytes(b"\n".join(lines) + b"\n")
    elif fmt == "jsonl":
        lines = []
        for file, caption in rows:
            if isinstance(caption, bytes):
                # Raw invalid bytes inside a JSON string.
                text = json.dumps({"path": file, "text": "@@"})
                lines.append(text.encode().replace(b"@@", caption))
            else:
                lines.append(
                    json.dumps({"path": file, "text": caption}).encode()
                )
        table.write_bytes(b"\n".join(lines) + b"\n")
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(
            pa.table(
                {
                    "path": [r[0] for r in rows],
                    "text": pa.array(
                        [
                            r[1] if isinstance(r[1], bytes) else r[1].encode()
                            for r in rows
                        ],
                        pa.binary(),
                    ),
                }
            ),
            table,
        )
    out = tmp_path / "out"
    manifest = write_shards(
        images,
        out,
        captions_file=table,
        image_column="path",
        caption_column="text",
        records_per_shard=4,
        progress=False,
    )
    assert manifest["num_records"] == 6
    assert manifest["skipped"] == EXPECTED_SKIPPED
    assert manifest["num_skipped"] == sum(EXPECTED_SKIPPED.values())
    assert manifest["schema_version"] == schema.SCHEMA_VERSION
    assert [s["file"] for s in manifest["shards"]] == [
        f"shard-0000{i}-of-00003.tfrecord" for i in range(3)
    ]
    assert sum(s["records"] for s in manifest["shards"]) == 6
    assert read_manifest(out) == manifest
    records = _read_records(out)
    by_key = {r["key"]: r for r in records}
    assert by_key["good3"]["caption"] == "a red box number 3"
    assert (by_key["good3"]["width"], by_key["good3"]["height"]) == (13, 8)
    assert by_key["sub/jpg"]["caption"] == "noisy  picture"
    assert by_key["sub/jpg"]["image"] == (images / "sub/jpg.jpg").read_bytes()


def test_folder_with_side_txt_files(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    (images / "a.png").write_bytes(_png())
    (images / "a.txt").write_text("a red square")
    (images / "b.png").write_bytes(_png())  # no caption file
    (images / "c.png").write_bytes(_png())
    (images / "c.txt").write_bytes(b"\xff\xfe bad")
    manifest = write_shards(images, tmp_path / "out", progress=False)
    assert manifest["num_records"] == 1
    assert manifest["skipped"] == {
        "invalid_utf8_caption": 1,
        "missing_caption": 1,
    }


def _add(tar, name, data, kind=tarfile.REGTYPE, link=""):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def _write_tar(path, good=3):
    with tarfile.open(path, "w") as tar:
        for i in range(good):
            _add(tar, f"{i:06d}.jpg", _jpeg())
            _add(tar, f"{i:06d}.txt", f"caption {i}".encode())
            _add(tar, f"{i:06d}.json", b"{}")
        _add(tar, "nocap.png", _png())
        _add(tar, "noimg.txt", b"only text")
        _add(tar, "../evil.jpg", _jpeg())
        _add(tar, "../evil.txt", b"escape")
        _add(tar, "/abs/x.txt", b"absolute")
        _add(tar, "link.jpg", b"", kind=tarfile.SYMTYPE, link="/etc/passwd")
        _add(tar, "bad.jpg", b"\x89PNG garbage")
        _add(tar, "bad.txt", b"fine caption")
        _add(tar, "utf.png", _png())
        _add(tar, "utf.txt", b"\xc3\x28 broken")
        _add(tar, "blank.png", _png())
        _add(tar, "blank.txt", b" \n\t ")


def test_tar_source_and_path_traversal(tmp_path):
    _write_tar(tmp_path / "a.tar")
    _write_tar(tmp_path / "b.tar", good=2)
    out = tmp_path / "out"
    manifest = write_shards(str(tmp_path / "*.tar"), out, progress=False)
    assert manifest["num_records"] == 5
    assert [s["records"] for s in manifest["shards"]] == [3, 2]
    per_tar = {
        "missing_caption": 1,
        "missing_image": 1,
        "unsafe_member_name": 4,
        "undecodable_image": 1,
        "invalid_utf8_caption": 1,
        "empty_caption": 1,
    }
    assert manifest["shards"][0]["skipped"] == dict(sorted(per_tar.items()))
    assert manifest["skipped"] == {k: 2 * v for k, v in sorted(per_tar.items())}
    records = _read_records(out)
    assert sorted(r["caption"] for r in records) == sorted(
        [f"caption {i}" for i in range(3)] + [f"caption {i}" for i in range(2)]
    )
    assert all("evil" not in r["key"] for r in records)
    # Nothing was extracted next to the tar.
    assert not (tmp_path / "evil.jpg").exists()


def test_truncated_tar_keeps_earlier_samples(tmp_path):
    _write_tar(tmp_path / "a.tar", good=6)
    data = (tmp_path / "a.tar").read_bytes()
    (tmp_path / "a.tar").write_bytes(data[: len(data) // 3])
    manifest = write_shards(
        tmp_path / "a.tar", tmp_path / "out", progress=False
    )
    assert manifest["skipped"].get("corrupt_tar") == 1
    assert 0 < manifest["num_records"] < 6


def test_reencode_and_extra_features(tmp_path):
    records = [
        {"key": "big", "image": _jpeg((100, 60)), "caption": "big one"},
        {
            "key": "rgba",
            "image": _png((1, 2, 3, 4), (20, 10), "RGBA"),
            "caption": "small rgba",
        },
    ]

    def extra(caption):
        return {"synsets": [len(w) for w in caption.split()]}

    out = tmp_path / "out"
    manifest = write_shards(
        records,
        out,
        max_image_size=50,
        extra_features_fn=extra,
        progress=False,
    )
    assert manifest["extra_features"] == ["synsets"]
    by_key = {r["key"]: r for r in _read_records(out)}
    big = Image.open(io.BytesIO(by_key["big"]["image"]))
    assert big.format == "JPEG" and big.size == (50, 30)
    assert (by_key["big"]["width"], by_key["big"]["height"]) == (100, 60)
    assert by_key["big"]["extra"] == {"synsets": [3, 3]}
    # Small images keep their original bytes.
    assert by_key["rgba"]["image"] == records[1]["image"]


def test_atomic_writes_and_resume(tmp_path, monkeypatch):
    records = [
        {"key": f"k{i}", "image": _png(size=(8 + i, 8)), "caption": f"c {i}"}
        for i in range(7)
    ]
    records[3]["caption"] = " "
    out = tmp_path / "out"
    first = write_shards(records, out, records_per_shard=3, progress=False)
    assert first["skipped"] == {"empty_caption": 1}
    names = [s["file"] for s in first["shards"]]
    manifest_text = (out / "manifest.json").read_text()

    # Simulate a kill while writing shard 1: its file and progress record
    # are gone, a temporary file is left behind, the manifest is stale.
    os.remove(out / names[1])
    os.remove(out / ".progress" / (names[1] + ".json"))
    (out / f".{names[1]}.tmp-99999").write_bytes(b"partial")
    os.remove(out / "manifest.json")
    written = []
    original = shard_writer._write_one_shard

    def spy(job):
        written.append(job[3])
        return original(job)

    monkeypatch.setattr(shard_writer, "_write_one_shard", spy)
    second = write_shards(records, out, records_per_shard=3, progress=False)
    assert written == [names[1]]
    assert second == first
    assert (out / "manifest.json").read_text() == manifest_text
    assert not [n for n in os.listdir(out) if ".tmp-" in n]

    # A shard file changed after it was recorded is rewritten.
    (out / names[2]).write_bytes(b"damaged")
    written.clear()
    assert (
        write_shards(records, out, records_per_shard=3, progress=False) == first
    )
    assert written == [names[2]]

    # Other arguments into the same folder: refused unless overwrite.
    with pytest.raises(ValueError, match="other arguments"):
        write_shards(records, out, records_per_shard=2, progress=False)
    third = write_shards(
        records, out, records_per_shard=2, progress=False, overwrite=True
    )
    assert third["num_records"] == 6
    assert sorted(n for n in os.listdir(out) if n.endswith(".tfrecord")) == [
        s["file"] for s in third["shards"]
    ]


def test_written_files_get_the_usual_permissions(tmp_path):
    from keras_superclass.utils.io import atomic_write_text

    existing = tmp_path / "existing.txt"
    existing.write_text("old")
    os.chmod(existing, 0o640)
    out = tmp_path / "out"
    old_umask = os.umask(0o022)
    try:
        write_shards(
            [{"key": "k", "image": _png(), "caption": "c"}],
            out,
            progress=False,
        )
        atomic_write_text(tmp_path / "new.txt", "new")
        atomic_write_text(existing, "new")
    finally:
        os.umask(old_umask)

    def mode(path):
        return stat.S_IMODE(os.stat(path).st_mode)

    # New files: 0o666 less the umask, as `open()` makes them.
    shard = [n for n in os.listdir(out) if n.endswith(".tfrecord")][0]
    assert mode(out / shard) == 0o644
    assert mode(out / "manifest.json") == 0o644
    assert mode(tmp_path / "new.txt") == 0o644
    # A replaced file keeps its permissions.
    assert mode(existing) == 0o640
    assert existing.read_text() == "new"


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="The writer does not depend on the Keras backend and each spawned "
    "worker re-imports the package (~30 s), so this runs on the tensorflow "
    "backend only.",
)
def test_worker_processes_give_the_same_manifest(tmp_path):
    records = [
        {"key": f"k{i}", "image": _png(size=(8, 8 + i)), "caption": f"c {i}"}
        for i in range(4)
    ]
    one = write_shards(
        records, tmp_path / "a", records_per_shard=2, progress=False
    )
    two = write_shards(
        records, tmp_path / "b", records_per_shard=2, workers=2, progress=False
    )
    assert one == two
    assert _read_records(tmp_path / "a") == _read_records(tmp_path / "b")


def test_cli(tmp_path, capsys):
    from keras_superclass.cli.main import main

    images, rows = _folder(tmp_path)
    lines = ["file,caption"] + [
        f"{f},{c}" for f, c in rows if isinstance(c, str) and "," not in c
    ]
    (tmp_path / "c.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    code = main(
        [
            "shards",
            "--images",
            str(images),
            "--captions",
            str(tmp_path / "c.csv"),
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 0
    assert "6 records" in capsys.readouterr().out
    assert read_manifest(out)["num_records"] == 6
    code = main(
        [
            "shards",
            "--demo",
            "--out",
            str(tmp_path / "demo"),
            "--num-train",
            "6",
            "--num-test",
            "3",
            "--no-progress",
        ]
    )
    assert code == 0
    assert read_manifest(tmp_path / "demo" / "test")["num_records"] == 3
    # A user error is one line, exit code 2.
    code = main(
        [
            "shards",
            "--images",
            str(images),
            "--captions",
            str(tmp_path / "nope.csv"),
            "--out",
            str(out),
        ]
    )
    assert code == 2
    assert "does not exist" in capsys.readouterr().err
    # A misspelt images folder, or an image file, is named as such (not
    # read as a tar file).
    captions = tmp_path / "captions.csv"
    captions.write_text("file,caption\n0.png,a cat\n")
    for images, said in (
        (tmp_path / "imgs", "--images '{}' does not exist"),
        (captions, "--images '{}' is a file"),
    ):
        args = ["shards", "--images", str(images), "--captions"]
        code = main([*args, str(captions), "--out", str(tmp_path / "x")])
        assert code == 2
        assert said.format(images) in capsys.readouterr().err


def _cli(*args):
    from keras_superclass.cli.main import main

    return main(["shards", *map(str, args), "--quiet"])


def test_cli_no_record_written_is_an_error_that_names_the_path(
    tmp_path, capsys
):
    root = tmp_path / "data"
    (root / "imgs").mkdir(parents=True)
    for i in range(3):
        (root / "imgs" / f"{i}.png").write_bytes(_png())
    # The table's paths are relative to `data`, not to `data/imgs`.
    rows = "".join(f"imgs/{i}.png,a red box {i}\n" for i in range(3))
    (root / "captions.csv").write_text("file,caption\n" + rows)
    out = tmp_path / "out"
    code = _cli(
        "--images", root / "imgs", "--captions", root / "captions.csv",
        "--out", out,
    )  # fmt: skip
    assert code == 2
    error = capsys.readouterr().err
    assert len(error.strip().splitlines()) == 1  # One line, no traceback.
    assert "No record was written" in error
    assert "missing_image=3" in error
    tried = str(root / "imgs" / "imgs" / "0.png")
    assert f"looked for at {tried!r}, which does not exist" in error
    assert "relative to the images folder (--images" in error
    assert f"It is in {str(root)!r}: pass that as --images" in error
    assert not out.exists()  # Nothing half-done is left behind.
    # The corrected command needs no --overwrite.
    code = _cli(
        "--images", root, "--captions", root / "captions.csv", "--out", out
    )
    assert code == 0
    assert read_manifest(out)["num_records"] == 3


def test_manifest_and_cli_list_the_skipped_files(tmp_path, capsys, monkeypatch):
    images, rows = _folder(tmp_path)
    lines = ["file,caption"] + [
        f"{f},{c}" for f, c in rows if isinstance(c, str) and "," not in c
    ]
    (tmp_path / "c.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    code = _cli(
        "--images", images, "--captions", tmp_path / "c.csv", "--out", out,
        "--records-per-shard", 4,
    )  # fmt: skip
    assert code == 0
    manifest = read_manifest(out)
    assert manifest["skipped_files"] == {
        "empty_caption": ["good0.png", "good1.png"],
        "missing_image": ["missing.png"],
        "undecodable_image": ["bad.jpg"],
        "unsafe_member_name": ["../good0.png"],
    }
    assert manifest["skipped_files_more"] == {}
    assert manifest["shards"][1]["skipped_files"] == {
        "missing_image": ["missing.png"],
        "undecodable_image": ["bad.jpg"],
    }
    printed = capsys.readouterr().out
    assert "empty_caption: 2 (good0.png, good1.png)" in printed
    assert "missing_image: 1 (missing.png)" in printed
    assert "skipped_files" in printed

    # Long lists are cut, with a count of the names left out.
    monkeypatch.setattr(shard_writer, "MAX_SKIPPED_NAMES", 1)
    manifest = write_shards(
        images,
        tmp_path / "cut",
        captions_file=tmp_path / "c.csv",
        records_per_shard=4,
        progress=False,
    )
    assert manifest["skipped_files"]["empty_caption"] == ["good0.png"]
    assert manifest["skipped_files_more"] == {"empty_caption": 1}


def test_cli_max_image_size_and_its_old_name(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    (images / "a.png").write_bytes(_png(size=(12, 8)))
    (images / "a.txt").write_text("a red box")
    for flag in ("--max-image-size", "--max-size"):
        out = tmp_path / flag.strip("-")
        assert _cli("--images", images, "--out", out, flag, 6) == 0
        (record,) = _read_records(out)
        assert Image.open(io.BytesIO(record["image"])).size == (6, 4)
