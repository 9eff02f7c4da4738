"""`TarSource`: WebDataset tar shards, read without extracting."""

import glob
import os
import posixpath
import tarfile
import zlib

from keras_superclass.data import schema
from keras_superclass.data.sources.base import CAPTION_EXTENSION
from keras_superclass.data.sources.base import RawRecord
from keras_superclass.data.sources.base import Source
from keras_superclass.data.sources.base import is_unsafe_name
from keras_superclass.utils.constants import IMAGE_EXTENSIONS


def _split_key(name):
    """WebDataset convention: key = dir + basename up to its first dot."""
    directory, base = posixpath.split(name)
    stem, dot, ext = base.partition(".")
    key = posixpath.join(directory, stem) if directory else stem
    return key, ("." + ext.lower()) if dot else ""


class TarSource(Source):
    """WebDataset tar shards (img2dataset output): one output shard per tar.

    Members are grouped by key (`dir/name` up to the first dot of the base
    name); a group needs an image (`.jpg`, `.jpeg`, `.png`, `.webp`, `.bmp`,
    `.gif`) and a `.txt` caption. Nothing is extracted to disk. Members with
    an absolute name, a `..` component, or that are links/devices are
    refused and counted as `unsafe_member_name`; a tar that ends early or is
    damaged counts one `corrupt_tar` and keeps the samples read before.

    Args:
        tar_files: a path, a glob pattern, or a list of them.

    Example (not run as a doctest: needs image
    files, tar files or encoded images):

    >>> write_shards(TarSource("laion/*.tar"), "shards/", workers=4)
    ... # doctest: +SKIP
    """

    def __init__(self, tar_files):
        if isinstance(tar_files, str | os.PathLike):
            tar_files = [tar_files]
        paths = []
        for item in tar_files:
            item = os.fspath(item)
            matched = sorted(glob.glob(item)) if glob.has_magic(item) else []
            if matched:
                paths.extend(matched)
            elif os.path.exists(item):
                paths.append(item)
            else:
                raise FileNotFoundError(f"No tar file matches {item!r}.")
        self.tar_files = [os.path.abspath(p) for p in paths]

    def tasks(self):
        return list(self.tar_files)

    def read(self, task):
        tar_name = os.path.basename(task)
        for record in self._read_tar(task):
            if record.name is None:
                record.name = f"{tar_name}:{record.key}"
            yield record

    def _read_tar(self, task):
        groups = {}

        def finish(key, group):
            if group.get("unsafe"):
                return RawRecord(key, skip_reason=schema.UNSAFE_MEMBER_NAME)
            if group.get("image") is None:
                return RawRecord(key, skip_reason=schema.MISSING_IMAGE)
            if group.get("caption") is None:
                return RawRecord(key, skip_reason=schema.MISSING_CAPTION)
            return RawRecord(
                key, image=group["image"], caption=group["caption"]
            )

        try:
            with tarfile.open(task, mode="r|*") as tar:
                previous = None
                for member in tar:
                    if member.isdir():
                        continue
                    name = member.name
                    unsafe = is_unsafe_name(name) or not member.isfile()
                    key, ext = _split_key(name.lstrip("/"))
                    if unsafe:
                        yield RawRecord(
                            name, skip_reason=schema.UNSAFE_MEMBER_NAME
                        )
                        continue
                    if key != previous and previous is not None:
                        # img2dataset writes one key's members together;
                        # emit the finished groups, keep incomplete ones.
                        for done in [
                            k
                            for k, g in groups.items()
                            if "image" in g and "caption" in g
                        ]:
                            yield finish(done, groups.pop(done))
                    previous = key
                    group = groups.setdefault(key, {})
                    if ext in IMAGE_EXTENSIONS:
                        group["image"] = tar.extractfile(member).read()
                    elif ext == CAPTION_EXTENSION:
                        group["caption"] = tar.extractfile(member).read()
                end = tar.offset
            if not _has_end_marker(task, end):
                raise tarfile.ReadError("archive ends without its end marker")
        except (tarfile.TarError, EOFError, OSError, zlib.error):
            name = os.path.basename(task)
            yield RawRecord(name, skip_reason=schema.CORRUPT_TAR, name=name)
        for key, group in groups.items():
            yield finish(key, group)

    def describe(self):
        return {"type": "tar", "tar_files": self.tar_files}


def _has_end_marker(path, offset):
    """False when an uncompressed tar stops before its end-of-archive blocks
    (`tarfile` reads a tar cut at a header boundary as a shorter one)."""
    with open(path, "rb") as f:
        if f.read(6).startswith((b"\x1f\x8b", b"BZh", b"\xfd7zXZ")):
            return True  # Compressed: the decompressor reports truncation.
        f.seek(offset)
        tail = f.read(1024)
    return len(tail) == 1024 and not tail.strip(b"\0")
