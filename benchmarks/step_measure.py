"""What each timed child process of `train_step.py` measures.

Every side (the matmul ceiling, ours, the reference) runs in its own
process and imports its one framework; these helpers time its steps, watch
its CPU share and resident memory, and print one JSON line for the parent.
"""

import json
import os
import time

# Dense datasheet peaks (FLOP/s) of GPUs, by a substring of their name.
GPU_PEAKS = {
    "H200": {"float32": 67e12, "bfloat16": 989e12},
    "H100": {"float32": 67e12, "bfloat16": 989e12},
    "A100": {"float32": 19.5e12, "bfloat16": 312e12},
}


def make_batch(batch_size, image_size, vocabulary_size, seed=0):
    """Images and padded token ids `(B, 77)` (pad -1, 8-31 tokens each)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    images = rng.standard_normal(
        (batch_size, image_size, image_size, 3), dtype="float32"
    )
    ids = np.full((batch_size, 77), -1, dtype="int32")
    for i in range(batch_size):
        n = int(rng.integers(8, 32))
        ids[i, :n] = rng.integers(0, vocabulary_size, size=n)
    return images, ids


class StepMonitor:
    """Peak RSS of the timed steps and the CPU share others used."""

    def __enter__(self):
        try:  # Linux: "5" resets the peak resident set size (VmHWM).
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.scope = "timed steps"
        except OSError:
            self.scope = "process"
        self.rss_before_mb = _status_mb("VmRSS:")
        self.busy, self.own = _cpu_busy(), _own_cpu()
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        wall = time.perf_counter() - self.start
        busy, own = _cpu_busy() - self.busy, _own_cpu() - self.own
        cores = os.cpu_count() or 1
        self.others = max(0.0, (busy - own) / (wall * cores)) if busy else 0.0
        self.peak_rss_mb = _peak_rss_mb()


def _cpu_busy():
    """Seconds all CPUs spent busy since boot (0 if unknown)."""
    try:
        with open("/proc/stat", encoding="utf-8") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return 0.0
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _own_cpu():
    times = os.times()
    return times.user + times.system


def _status_mb(key):
    """A `/proc/self/status` memory field in MiB (None if unknown)."""
    try:
        with open("/proc/self/status", encoding="utf-8") as f:
            for line in f:
                if line.startswith(key):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def imports_rss_mb():
    """Resident MiB once a side imported its libraries, before any model."""
    return _status_mb("VmRSS:")


def _peak_rss_mb():
    peak = _status_mb("VmHWM:")
    if peak is not None:
        return peak
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def timed(step, sync, args):
    """Warm-up, then `args.steps` timed steps inside a `StepMonitor`."""
    for _ in range(args.warmup):
        step()
    sync()
    times, cpu, faults = [], [], []
    with StepMonitor() as monitor:
        for _ in range(args.steps):
            start, start_cpu = time.perf_counter(), _own_cpu()
            start_faults = _page_faults()
            step()
            sync()
            times.append(time.perf_counter() - start)
            cpu.append(_own_cpu() - start_cpu)
            faults.append(_page_faults() - start_faults)
    monitor.cpu_times, monitor.page_faults = cpu, faults
    return times, monitor


def _page_faults():
    """This process's minor page faults so far: a step that maps fresh
    memory pays one (and a zeroed page) for each 4 KiB it touches."""
    try:
        import resource
    except ImportError:  # not a Unix
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def torch_device(args):
    import torch

    if args.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return args.device


def main_matmul(args):
    """Float32 / bfloat16 matmul speed of one library (`--matmul-library`;
    PyTorch's on a GPU). Each library is timed in its own process."""
    library = args.matmul_library or "torch"
    try:
        if library == "torch":
            import torch

            device = torch_device(args)
            size = args.matmul_size or (8192 if device == "cuda" else 4096)
            flops = _torch_matmuls(size, device)
            name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
        else:
            flops = CPU_MATMULS[library](args.matmul_size or 4096)
            name = "cpu"
    except ImportError:  # not installed
        flops, name = None, "cpu"
    print(json.dumps({"library": library, "device_name": name, "flops": flops}))
    return 0


def matmul_ceiling(results):
    """The MFU denominator from `main_matmul`'s results: on a CPU the
    fastest library's matmul per dtype (their kernels differ by up to 2x on
    one CPU: MKL's float32 matmul on an AMD EPYC ran at half XLA's, and a
    ceiling from it alone gave MFUs above 100%); on a known GPU its
    datasheet peak."""
    measured = [r for r in results if r["flops"]]
    name = measured[0]["device_name"]
    flops = {}
    for result in measured:
        for dtype, value in result["flops"].items():
            flops[dtype] = max(flops.get(dtype, 0.0), value)
    peak, source = dict(flops), "measured matmul (fastest library)"
    for key, table in GPU_PEAKS.items():
        if key in name:
            peak, source = dict(table), f"datasheet ({key}, dense)"
    peak.setdefault("bfloat16", peak["float32"])
    return {
        "device_name": name,
        "gflops": {k: round(v / 1e9, 1) for k, v in flops.items()},
        "gflops_by_library": {
            r["library"]: {k: round(v / 1e9, 1) for k, v in r["flops"].items()}
            for r in measured
        },
        "peak_flops": peak,
        "peak_source": source,
    }


def _best_of_three(fn, sync, size):
    fn()  # warm-up (and compilation)
    sync()
    return 2.0 * size**3 / min(_time_call(fn, sync) for _ in range(3))


def _speed(make_call, size):
    """FLOP/s of the square matmul `make_call(n)` returns (a call and its
    sync), `n` doubling from 256 to `size` while one call takes under a
    quarter second. A dtype without native kernels is then measured in
    seconds: PyTorch's bf16 matmul on a CPU without AVX512-BF16 ran at
    1 GFLOP/s, and at 4096 took minutes a call."""
    n = min(256, size)
    while True:
        flops = _best_of_three(*make_call(n), n)
        if n >= size or 2.0 * n**3 / flops > 0.25:
            return flops
        n = min(2 * n, size)


def _torch_matmuls(size, device):
    import torch

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def make_call(dtype):
        def call_at(n):
            a = torch.randn(n, n, device=device).to(getattr(torch, dtype))
            return (lambda: a @ a), sync

        return call_at

    return {d: _speed(make_call(d), size) for d in ("float32", "bfloat16")}


def _jax_cpu(size):
    import jax
    import jax.numpy as jnp

    matmul = jax.jit(jnp.matmul, backend="cpu")

    def make_call(dtype):
        def call_at(n):
            a = jax.random.normal(jax.random.key(0), (n, n)).astype(dtype)
            return (lambda: matmul(a, a).block_until_ready()), _no_sync

        return call_at

    return {d: _speed(make_call(d), size) for d in ("float32", "bfloat16")}


def _tensorflow_cpu(size):
    # First, as the training side does: TensorFlow on the package's oneDNN
    # default (`utils/xla_flags.py`).
    import keras_superclass  # noqa: F401, I001
    import tensorflow as tf

    def make_call(dtype):
        def call_at(n):
            with tf.device("/CPU:0"):
                a = tf.cast(tf.random.normal((n, n)), dtype)

            def call():
                with tf.device("/CPU:0"):
                    return tf.matmul(a, a).numpy()

            return call, _no_sync

        return call_at

    return {d: _speed(make_call(d), size) for d in ("float32", "bfloat16")}


def _numpy_cpu(size):
    import numpy as np

    def call_at(n):
        a = np.random.default_rng(0).standard_normal((n, n), "float32")
        return (lambda: a @ a), _no_sync

    return {"float32": _speed(call_at, size)}


def _no_sync():
    pass


CPU_MATMULS = {
    "jax": _jax_cpu,
    "tensorflow": _tensorflow_cpu,
    "numpy": _numpy_cpu,
}


def _time_call(fn, sync):
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def report(times, monitor, setup, peak_device_mb=None, imports_mb=None):
    print(
        json.dumps(
            {
                "times": times,
                "cpu_times": monitor.cpu_times,
                "page_faults": monitor.page_faults,
                "peak_rss_mb": monitor.peak_rss_mb,
                "peak_rss_scope": monitor.scope,
                "rss_before_steps_mb": monitor.rss_before_mb,
                "rss_after_imports_mb": imports_mb,
                "peak_device_mb": peak_device_mb,
                "others_cpu_share": monitor.others,
                "setup": setup,
            }
        )
    )
    return 0
