"""`utils/cpu_memory`: a step's freed memory is reused, not mapped anew."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import pytest

from keras_superclass.utils import cpu_memory

glibc_only = pytest.mark.skipif(
    not cpu_memory.on_glibc(),
    reason="mallopt settings exist on Linux with glibc only",
)

# Allocates, writes and frees an 80 MB block (above glibc's mmap
# threshold, as the S/16 head's kernel gradient), then counts the page
# faults of doing it again: each is a page the process had handed back.
_REALLOCATION = textwrap.dedent(
    """
    import ctypes, json, resource, sys
    from keras_superclass.utils import cpu_memory

    kept = cpu_memory.keep_freed_memory_mapped({}) if sys.argv[1] else None
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    size = 80 * 2**20

    def touch():  # glibc's malloc itself (NumPy asks for huge pages)
        block = libc.malloc(size)
        ctypes.memset(block, 1, size)
        libc.free(ctypes.c_void_p(block))

    touch()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    touch()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    print(json.dumps({"kept": kept, "faults": faults, "pages": size // 4096}))
    """
)


def _reallocation(keep):
    out = subprocess.run(
        [sys.executable, "-c", _REALLOCATION, "1" if keep else ""],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", "KERAS_BACKEND": keras.backend.backend()},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@glibc_only
def test_freed_memory_is_reused_without_page_faults():
    kept = _reallocation(keep=True)
    assert kept["kept"] is True
    # Every page is reused: no fault (a few for glibc's own bookkeeping).
    assert kept["faults"] < 0.02 * kept["pages"], kept
    default = _reallocation(keep=False)
    # glibc's default maps the block afresh: a fault a page, unless the
    # kernel backs it with huge pages (transparent huge pages "always").
    assert default["faults"] > 10 * max(kept["faults"], 1) or (
        default["faults"] < 0.02 * default["pages"]
    ), default


@pytest.mark.parametrize(
    "environ",
    [
        {"LD_PRELOAD": "libjemalloc.so.2"},
        {"MALLOC_ARENA_MAX": "2"},
        {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"},
    ],
)
def test_the_users_allocator_settings_win(environ):
    assert cpu_memory.keep_freed_memory_mapped(environ) is False


def test_training_keeps_freed_memory_only_where_measured(monkeypatch):
    from keras_superclass.utils.xla_flags import backend_on_cpu

    for name in list(os.environ):  # no allocator choice of the user's
        if name.startswith("MALLOC_") or name in (
            "LD_PRELOAD",
            "GLIBC_TUNABLES",
        ):
            monkeypatch.delenv(name)
    applies = keras.backend.backend() == "torch" and backend_on_cpu()
    made = cpu_memory.keep_freed_memory_for_training()
    assert made is (applies and cpu_memory.on_glibc())
