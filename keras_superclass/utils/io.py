"""Atomic file writes: a crash never leaves a half-written file behind.

The file appears under its name only once it is complete (written to a
temporary file beside it, then `os.replace`d). A new file gets the
permissions `open()` would give it (`0o666` less the umask); a replaced
file keeps its permissions.
"""

import contextlib
import json
import os
import secrets

# Every temporary name holds this mark, so a folder's leftovers of a killed
# writer can be recognised (and removed) by it.
TMP_MARK = ".tmp-"


def _create_temporary(directory, basename):
    """Creates an empty file beside the target; returns its path.

    `os.open(..., 0o666)` lets the umask set the mode, as `open()` does
    (`tempfile.mkstemp` would make it 0600).
    """
    while True:
        path = os.path.join(
            directory, f".{basename}{TMP_MARK}{secrets.token_hex(4)}"
        )
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return path


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path next to `path`, renamed onto it on success.

    The code inside may write the temporary file or replace it with
    another file; either way it ends up with the permissions above.

    Example:
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "notes.txt")
    >>> with atomic_path(path) as tmp:
    ...     with open(tmp, "w") as f:
    ...         _ = f.write("done")
    >>> open(path).read()
    'done'
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = _create_temporary(directory, os.path.basename(path))
    try:
        new_file_mode = os.stat(tmp).st_mode & 0o777
        yield tmp
        try:
            mode = os.stat(path).st_mode & 0o7777
        except FileNotFoundError:
            mode = new_file_mode
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_text(path, text):
    """Writes `text` to `path` atomically (flushed to disk first)."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_json(path, obj):
    """Writes `obj` as indented JSON to `path` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")
