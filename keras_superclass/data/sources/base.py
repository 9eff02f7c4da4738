"""What every source shares: the record it yields and the base class."""

import dataclasses

CAPTION_EXTENSION = ".txt"


@dataclasses.dataclass
class RawRecord:
    """One input sample before checking.

    Attributes:
        key: unique id of the sample.
        image: encoded image bytes, or `None` when missing.
        caption: caption as `str` or raw bytes, or `None` when missing.
        extra: optional dict `name -> list of int` of extra features.
        skip_reason: set when the source already knows the sample is bad.
        name: where the sample comes from, as the manifest lists it when
            the sample is skipped (e.g. the image path of a captions
            table); default `key`.
    """

    key: str
    image: bytes | None = None
    caption: str | bytes | None = None
    extra: dict | None = None
    skip_reason: str | None = None
    name: str | None = None


class Source:
    """Base class: `tasks()` lists the shards, `read(task)` streams one."""

    def tasks(self):
        raise NotImplementedError

    def read(self, task):
        raise NotImplementedError

    def describe(self):
        """A JSON-able description recorded in the manifest."""
        return {"type": type(self).__name__}

    def explain_skip(self, reason, name):
        """Why the sample `name` was skipped for `reason` and how to fix
        it, in a sentence, or `None`: the writer's error when nothing at
        all was written shows it."""
        return None


def chunks(n, size):
    size = max(1, int(size))
    return [(start, min(n, start + size)) for start in range(0, n, size)]


def is_unsafe_name(name):
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return True
    parts = name.replace("\\", "/").split("/")
    return ".." in parts
