"""Writes image-caption pairs into TFRecord shards (see `schema`).

`write_shards` checks every sample (the image must decode, the caption must
be valid, non-blank UTF-8), optionally re-encodes large images so the
longest side is at most `max_image_size` (JPEG quality 95, as the reference
stores its data with the longest side <= 336), and writes one TFRecord shard
per source task. Bad samples are skipped, counted by reason and listed by
name in `manifest.json`; nothing fails silently, and a run that writes no
record at all is an error that says why.

Robustness: each shard is written to a temporary file in the output folder
and moved into place with `os.replace`, then recorded as finished in
`OUT/.progress/`. After a crash or kill, running the same command again
skips the finished shards, rewrites the rest, and produces the same
manifest.
"""

import io
import json
import multiprocessing
import os
import shutil

from keras_superclass.data import schema
from keras_superclass.data.sources import as_source
from keras_superclass.utils.io import TMP_MARK
from keras_superclass.utils.io import atomic_path
from keras_superclass.utils.io import atomic_write_text

PROGRESS_DIR = ".progress"
# Names of skipped inputs listed per reason (per shard and in all), so a
# dataset with millions of bad inputs keeps a small manifest.
MAX_SKIPPED_NAMES = 1000
# Formats `tf.io.decode_image` reads; anything else is re-encoded.
_TF_FORMATS = {"JPEG", "PNG", "GIF", "BMP", "WEBP"}


def check_caption(caption):
    """Returns `(text, None)` for a usable caption, else `(None, reason)`."""
    if caption is None:
        return None, schema.MISSING_CAPTION
    if isinstance(caption, bytes | bytearray):
        try:
            caption = bytes(caption).decode("utf-8")
        except UnicodeDecodeError:
            return None, schema.INVALID_UTF8_CAPTION
    caption = str(caption)
    try:
        caption.encode("utf-8")  # Lone surrogates from invalid input bytes.
    except UnicodeEncodeError:
        return None, schema.INVALID_UTF8_CAPTION
    caption = caption.strip()
    if not caption:
        return None, schema.EMPTY_CAPTION
    return caption, None


def check_image(data, max_image_size=None, reencode_all=False):
    """Decodes `data` fully with PIL.

    Returns `(encoded_bytes, width, height, None)` or `(None, 0, 0, reason)`.
    Images whose longest side exceeds `max_image_size` (or every image with
    `reencode_all`, or formats TensorFlow cannot decode) are converted to RGB
    and re-encoded as JPEG quality 95; width/height stay the original size.
    """
    from PIL import Image

    if not data:
        return None, 0, 0, schema.MISSING_IMAGE
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            width, height = image.size
            image_format = image.format
            too_big = max_image_size and max(width, height) > max_image_size
            if not (too_big or reencode_all or image_format not in _TF_FORMATS):
                return bytes(data), width, height, None
            if image.mode != "RGB":
                image = image.convert("RGB")
            if too_big:
                scale = max_image_size / max(width, height)
                size = (
                    max(1, round(width * scale)),
                    max(1, round(height * scale)),
                )
                image = image.resize(size, Image.BICUBIC)
            out = io.BytesIO()
            image.save(out, format="JPEG", quality=95)
            return out.getvalue(), width, height, None
    except Exception:  # PIL raises many types for bad data.
        return None, 0, 0, schema.UNDECODABLE_IMAGE


def shard_name(prefix, index, total):
    return f"{prefix}-{index:05d}-of-{total:05d}{schema.SHARD_SUFFIX}"


def _write_one_shard(job):
    """Writes one shard (runs in a worker process). Returns its stats."""
    import tensorflow as tf

    (source, task, out_dir, name, options) = job
    final = os.path.join(out_dir, name)
    skipped = {}
    skipped_names = {}
    records = 0
    extra_names = set()
    extra_fn = options["extra_features_fn"]
    with atomic_path(final) as tmp, tf.io.TFRecordWriter(tmp) as writer:
        for record in source.read(task):
            reason = record.skip_reason
            if reason is None:
                caption, reason = check_caption(record.caption)
            if reason is None:
                image, width, height, reason = check_image(
                    record.image,
                    options["max_image_size"],
                    options["reencode_all"],
                )
            if reason is not None:
                skipped[reason] = skipped.get(reason, 0) + 1
                names = skipped_names.setdefault(reason, [])
                if len(names) < MAX_SKIPPED_NAMES:
                    names.append(record.name or record.key)
                continue
            extra = dict(record.extra or {})
            if extra_fn is not None:
                extra.update(extra_fn(caption) or {})
            extra_names.update(extra)
            example = schema.make_example(
                image, caption, record.key, width, height, extra
            )
            writer.write(example.SerializeToString())
            records += 1
    stats = {
        "file": name,
        "records": records,
        **_skipped_entries(skipped, skipped_names),
        "extra_features": sorted(extra_names),
        "bytes": os.path.getsize(final),
    }
    atomic_write_text(
        os.path.join(out_dir, PROGRESS_DIR, name + ".json"),
        json.dumps(stats, sort_keys=True),
    )
    return stats


def _skipped_entries(skipped, names):
    """The manifest's `skipped` (reason -> count), `skipped_files` (reason
    -> names, at most `MAX_SKIPPED_NAMES`) and `skipped_files_more`
    (reason -> how many skipped inputs the list leaves out)."""
    more = {r: n - len(names.get(r, ())) for r, n in skipped.items()}
    return {
        "skipped": dict(sorted(skipped.items())),
        "skipped_files": {r: list(names[r]) for r in sorted(names)},
        "skipped_files_more": {r: n for r, n in sorted(more.items()) if n},
    }


def _merge_skipped(shards):
    skipped, names = {}, {}
    for shard in shards:
        for reason, count in shard["skipped"].items():
            skipped[reason] = skipped.get(reason, 0) + count
        # Progress records of older versions have no names.
        for reason, listed in shard.get("skipped_files", {}).items():
            kept = names.setdefault(reason, [])
            kept.extend(listed[: MAX_SKIPPED_NAMES - len(kept)])
    return _skipped_entries(skipped, names)


def format_skipped(manifest, examples=3):
    """Lines `reason: count (first names, ...)` of a manifest's skipped
    inputs, for a summary printed after writing."""
    lines = []
    for reason, count in manifest["skipped"].items():
        names = manifest.get("skipped_files", {}).get(reason, [])
        shown = ", ".join(names[:examples])
        if count > len(names[:examples]):
            shown += ", ..." if shown else "..."
        lines.append(f"{reason}: {count} ({shown})")
    return lines


def _finished(out_dir, name):
    progress = os.path.join(out_dir, PROGRESS_DIR, name + ".json")
    path = os.path.join(out_dir, name)
    if not (os.path.exists(progress) and os.path.exists(path)):
        return None
    with open(progress, encoding="utf-8") as f:
        stats = json.load(f)
    if stats.get("bytes") != os.path.getsize(path):
        return None  # The shard changed after it was recorded: redo it.
    return stats


def write_shards(
    source,
    out_dir,
    captions_file=None,
    image_column="file",
    caption_column="caption",
    key_column=None,
    records_per_shard=1000,
    max_image_size=None,
    reencode_all=False,
    extra_features_fn=None,
    workers=1,
    prefix="shard",
    progress=True,
    metadata=None,
    overwrite=False,
):
    """Writes image-caption pairs as TFRecord shards plus `manifest.json`.

    Args:
        source: a `Source`; a folder of images (with `captions_file`, or
            `.txt` caption files beside the images); a WebDataset `.tar`
            path, glob or list of paths (one output shard per tar); or a list
            of record dicts (`key`, `image` bytes, `caption`, opt. `extra`).
        out_dir: output folder (created).
        captions_file: CSV / TSV / JSONL / Parquet captions table of a folder.
        image_column: table column with the image path (relative to the
            folder).
        caption_column: table column with the caption.
        key_column: optional table column with a unique key.
        records_per_shard: records per shard for folder / list sources.
        max_image_size: if set, images whose longest side is larger are
            resized (bicubic) to that longest side and stored as JPEG
            quality 95 (the reference uses 336).
        reencode_all: re-encode every image as JPEG quality 95.
        extra_features_fn: optional `fn(caption) -> dict[name -> list[int]]`
            of extra int64-list features (e.g. CatLIP `synsets`). With
            `workers > 1` it must be picklable (a module-level function).
        workers: number of processes writing shards in parallel.
        prefix: shard file name prefix.
        progress: show a tqdm progress bar.
        metadata: optional JSON-able dict stored in the manifest
            (e.g. class names of label features).
        overwrite: discard the progress of an earlier run with different
            arguments instead of raising.

    Returns:
        The manifest dict (also written to `out_dir/manifest.json`).

    Example (not run as a doctest: needs image
    files and a captions file):

    >>> write_shards("images/", "shards/", captions_file="captions.csv",
    ...              max_image_size=336, workers=4)  # doctest: +SKIP
    """
    source = as_source(
        source,
        captions_file=captions_file,
        image_column=image_column,
        caption_column=caption_column,
        key_column=key_column,
        records_per_shard=records_per_shard,
    )
    out_dir = os.path.abspath(os.fspath(out_dir))
    os.makedirs(os.path.join(out_dir, PROGRESS_DIR), exist_ok=True)
    tasks = source.tasks()
    names = [shard_name(prefix, i, len(tasks)) for i in range(len(tasks))]
    args = {
        "source": source.describe(),
        "prefix": prefix,
        "num_shards": len(tasks),
        "max_image_size": max_image_size,
        "reencode_all": bool(reencode_all),
        "extra_features_fn": _describe_function(extra_features_fn),
    }
    _check_same_run(out_dir, args, overwrite)
    # Remove temporary files a killed run left behind.
    for name in os.listdir(out_dir):
        if TMP_MARK in name:
            os.remove(os.path.join(out_dir, name))

    stats = {}
    pending = []
    options = {
        "max_image_size": max_image_size,
        "reencode_all": reencode_all,
        "extra_features_fn": extra_features_fn,
    }
    for task, name in zip(tasks, names):
        done = _finished(out_dir, name)
        if done is not None:
            stats[name] = done
        else:
            pending.append((source, task, out_dir, name, options))

    from tqdm.auto import tqdm

    bar = tqdm(
        total=len(tasks),
        initial=len(tasks) - len(pending),
        unit="shard",
        desc="Writing shards",
        disable=not progress,
    )
    try:
        if workers and workers > 1 and len(pending) > 1:
            context = multiprocessing.get_context("spawn")
            with context.Pool(min(workers, len(pending))) as pool:
                for result in pool.imap_unordered(_write_one_shard, pending):
                    stats[result["file"]] = result
                    bar.update(1)
                    bar.set_postfix(records=_total(stats))
        else:
            for job in pending:
                result = _write_one_shard(job)
                stats[result["file"]] = result
                bar.update(1)
                bar.set_postfix(records=_total(stats))
    finally:
        bar.close()

    shards = [stats[name] for name in names]
    skipped = _merge_skipped(shards)
    if not _total(stats):
        _remove_run(out_dir, names)
        raise ValueError(_nothing_written(source, out_dir, skipped))
    extra = sorted({n for shard in shards for n in shard["extra_features"]})
    manifest = {
        "format": "keras_superclass.image_text_shards",
        "schema_version": schema.SCHEMA_VERSION,
        "num_records": _total(stats),
        "num_skipped": sum(skipped["skipped"].values()),
        **skipped,
        "extra_features": extra,
        "shards": [
            {"file": s["file"], "records": s["records"], **_merge_skipped([s])}
            for s in shards
        ],
        "args": args,
        "metadata": metadata or {},
    }
    atomic_write_text(
        os.path.join(out_dir, schema.MANIFEST_NAME),
        json.dumps(manifest, indent=2, sort_keys=True) + "\n",
    )
    return manifest


def _describe_function(fn):
    """`module.name` of an `extra_features_fn` for the run's arguments,
    plus its `fingerprint()` if it has one (e.g. of a vocabulary), so
    that resuming with other labels is refused."""
    if fn is None:
        return None
    text = getattr(fn, "__module__", "") + "."
    text += getattr(fn, "__qualname__", None) or type(fn).__qualname__
    if callable(getattr(fn, "fingerprint", None)):
        text += f"@{fn.fingerprint()}"
    return text


def _nothing_written(source, out_dir, skipped):
    """The error message of a run that wrote no record."""
    counts = skipped["skipped"]
    if not counts:
        return (
            f"No record was written to {out_dir!r}: the source has no "
            f"samples ({json.dumps(source.describe())})."
        )
    text = ", ".join(f"{r}={n}" for r, n in counts.items())
    text = (
        f"No record was written to {out_dir!r}: all {sum(counts.values())} "
        f"inputs were skipped ({text})."
    )
    reason = max(counts, key=counts.get)
    names = skipped["skipped_files"].get(reason)
    if names:
        hint = source.explain_skip(reason, names[0])
        if hint is None:
            hint = f"the first input skipped as {reason} is {names[0]!r}."
        text += f" For example, {hint}"
    return text


def _remove_run(out_dir, names):
    """Removes what a run that wrote nothing left (empty shards, progress,
    an old manifest), so a corrected command starts afresh."""
    for name in [*names, schema.MANIFEST_NAME]:
        if os.path.exists(os.path.join(out_dir, name)):
            os.remove(os.path.join(out_dir, name))
    shutil.rmtree(os.path.join(out_dir, PROGRESS_DIR), ignore_errors=True)
    if not os.listdir(out_dir):
        os.rmdir(out_dir)


def _total(stats):
    return sum(s["records"] for s in stats.values())


def _check_same_run(out_dir, args, overwrite):
    """Refuses to mix shards of runs with different arguments."""
    path = os.path.join(out_dir, PROGRESS_DIR, "args.json")
    text = json.dumps(args, sort_keys=True)
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            previous = f.read()
        if previous != text:
            if not overwrite:
                raise ValueError(
                    f"{out_dir!r} holds shards of a run with other arguments "
                    f"(see {path}). Use another output folder, or pass "
                    f"overwrite=True (--overwrite) to start over."
                )
            shutil.rmtree(os.path.join(out_dir, PROGRESS_DIR))
            os.makedirs(os.path.join(out_dir, PROGRESS_DIR))
            for name in os.listdir(out_dir):
                if name.startswith(args["prefix"] + "-") and name.endswith(
                    schema.SHARD_SUFFIX
                ):
                    os.remove(os.path.join(out_dir, name))
    atomic_write_text(path, text)


def read_manifest(path):
    """Loads `manifest.json` from a shard folder (or the file itself)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, schema.MANIFEST_NAME)
    with open(path, encoding="utf-8") as f:
        return json.load(f)
