"""glibc malloc settings for CPU training under PyTorch.

Each PyTorch training step frees and allocates its activations and
gradients again. glibc serves an allocation above its mmap threshold (32
MiB at most; the S/16 head's 76 MB kernel gradient, every step) with fresh
pages from the kernel, and hands the top of its heap back once more than
its trim threshold is free: the next step touches those pages anew, one
page fault (and a zeroed page) each. On a 2-core AVX2 AMD EPYC the S/16
float32 step under PyTorch took 26,000 page faults (median; up to 57,000)
and 98 ms of system time; `keep_freed_memory_mapped` took them to 4 and 8
ms, and the step from 3.98 s to 3.77 s (medians of 16 and 24 steps, runs
interleaved; `benchmarks/README.md`, nineteenth pass), at the same peak
memory.

TensorFlow's oneDNN allocator keeps its own pool (no page faults a step).
jax's step faults on 188,000 pages (735 MB) each time: its buffers come
from glibc's per-thread arenas, which map large blocks afresh whatever
these two settings say (measured: no fewer faults), and one arena for all
threads (`M_ARENA_MAX=1`) removed the faults but cost 7-10% more CPU
time; jax is left as it is (see the README for `GLIBC_TUNABLES`).
"""

import ctypes
import os
import platform
import sys

# mallopt parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_KEEP_BYTES = 2**31 - 1  # the largest value mallopt takes


def keep_freed_memory_mapped(environ=None):
    """Keeps freed memory in the process for the next step to reuse.

    Large allocations come from the heap rather than fresh mappings
    (`M_MMAP_MAX=0`), and the heap is not handed back while less than 2
    GiB is free at its top (`M_TRIM_THRESHOLD`). The process keeps its
    peak memory mapped until it exits, as a caching allocator does; `train`
    calls this for a PyTorch run on a CPU. Linux with glibc only; skipped
    when the environment already sets glibc's malloc options (the user
    chose) or preloads another allocator.

    Returns:
        Whether the settings were made.

    Example (another allocator preloaded: glibc's settings are moot):
    >>> keep_freed_memory_mapped({"LD_PRELOAD": "libjemalloc.so.2"})
    False
    """
    environ = os.environ if environ is None else environ
    if not on_glibc():
        return False
    user_chose = any(name.startswith("MALLOC_") for name in environ) or (
        "glibc.malloc" in environ.get("GLIBC_TUNABLES", "")
    )
    if user_chose or environ.get("LD_PRELOAD"):
        return False
    libc = ctypes.CDLL("libc.so.6")
    return bool(
        libc.mallopt(_M_MMAP_MAX, 0)
        and libc.mallopt(_M_TRIM_THRESHOLD, _KEEP_BYTES)
    )


def on_glibc():
    """Whether this process runs on Linux with glibc (`mallopt` exists)."""
    return sys.platform == "linux" and platform.libc_ver()[0] == "glibc"


def keep_freed_memory_for_training():
    """`keep_freed_memory_mapped` where it was measured to help: PyTorch
    computing on a CPU. Returns whether the settings were made."""
    import keras

    from keras_superclass.utils.xla_flags import backend_on_cpu

    if keras.backend.backend() != "torch" or not backend_on_cpu():
        return False
    return keep_freed_memory_mapped()
