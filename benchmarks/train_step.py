"""Times SuperClass training steps against the reference PyTorch step.

Every timed side runs in its own fresh process, one at a time, the
reference and ours interleaved (`--rounds 2`: ref, ours, ref, ours; with
several backends: ref, jax, tensorflow, torch, ref, ...). The parent
imports no framework, so no thread pool of its own competes with the
timed side. Each process warms up (compilation), then times `--steps`
steps; the report pools the timed steps of all rounds (median, min, max).

- matmul: the machine's practical ceiling (the fastest float32 and
  bfloat16 matmuls of the installed PyTorch, jax, TensorFlow and NumPy,
  each timed in its own process and reported), the denominator of MFU
  on a CPU; on a known GPU the datasheet peak is used (PyTorch's matmul
  is reported).
- ours: `SuperClassClassifier` as `compile()` builds it (AdamW,
  `SuperClassLoss` with online IDF, token metrics), `train_on_batch`;
  `--dtype bfloat16` runs it under `mixed_bfloat16` (loss and IDF
  statistics stay float32).
- reference: OpenCLIP's `VisionTransformer` (avg pooling, no projection)
  + LayerNorm/Linear head, the x-cls/superclass `ClsLoss` formula with
  running `cap_fq` / `num_samples` buffers, `torch.optim.AdamW` (decay on
  ndim >= 2); `--dtype bfloat16` wraps forward and loss in
  `torch.autocast(device, torch.bfloat16)`; on a GPU the model is
  `torch.compile`d, as OpenCLIP runs it (`--reference-compile`).

Each process reports the peak resident memory of its timed steps (the
high-water mark is reset after warm-up) and, on a GPU, the peak device
memory, and the share of the CPUs other processes used meanwhile.

Usage:
    python benchmarks/train_step.py --backends jax,tensorflow,torch --json
    python benchmarks/train_step.py --backends jax --dtype bfloat16
    python benchmarks/train_step.py --device-check  # tiny, a smoke test
"""

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRESETS_FILE = os.path.join(
    ROOT, "keras_superclass", "models", "superclass", "superclass_presets.py"
)
ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add = parser.add_argument
    add(
        "--backends",
        default=None,
        help="Keras backends, comma-separated "
        "(default: $KERAS_BACKEND, else jax).",
    )
    add("--preset", default="superclass_vit_s16")
    add("--dtype", default="float32", choices=("float32", "bfloat16"))
    add("--batch-size", type=int, default=16)
    add("--image-size", type=int, default=224)
    add("--vocabulary-size", type=int, default=49408)
    add("--num-layers", type=int, default=None, help="Override the preset.")
    add("--steps", type=int, default=3, help="Timed steps per process.")
    add("--warmup", type=int, default=2, help="Untimed steps first.")
    add("--rounds", type=int, default=2, help="Interleaved rounds.")
    add("--matmul-size", type=int, default=None)
    add("--device", default="auto", choices=("auto", "cpu", "cuda"))
    add("--jit-compile", default="auto", choices=("auto", "true", "false"))
    add("--remat", action="store_true", help="Ours: remat every block.")
    add(
        "--reference-compile",
        default="auto",
        choices=("auto", "on", "off"),
        help="torch.compile the reference (auto: on a GPU only).",
    )
    add("--no-reference", action="store_true")
    add(
        "--own-framework-only",
        action="store_true",
        help="Ours: the other backends' frameworks cannot be imported, as "
        "in an install with only this backend's (Keras imports jax and "
        "keras_hub imports TensorFlow whenever they are installed).",
    )
    add(
        "--device-check",
        action="store_true",
        help="Tiny sizes: check the benchmark runs on this machine.",
    )
    add(
        "--json",
        action="store_true",
        help="Print one JSON line per backend last.",
    )
    add("--role", help=argparse.SUPPRESS)  # internal: a child's side
    add("--matmul-library", help=argparse.SUPPRESS)  # internal: the same
    args = parser.parse_args(argv)
    if args.device_check:
        args.preset, args.image_size, args.batch_size = (
            "superclass_vit_ti16",
            32,
            2,
        )
        args.vocabulary_size, args.num_layers = 1024, 2
        args.steps, args.warmup, args.rounds = 2, 1, 1
        args.matmul_size = args.matmul_size or 512
    if args.steps * args.rounds < 1:
        parser.error("--steps and --rounds must be positive.")
    return args


# === Parent: no framework imports here ===


def backbone_config(args):
    """The preset's backbone config, read without importing the package."""
    spec = importlib.util.spec_from_file_location("_presets", PRESETS_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if args.preset not in module.backbone_presets:
        raise SystemExit(
            f"Unknown --preset {args.preset!r}; choose one of "
            f"{sorted(module.backbone_presets)}."
        )
    config = dict(module.backbone_presets[args.preset]["backbone"])
    if args.num_layers:
        config["num_layers"] = args.num_layers
    return config


def vit_train_flops(config, image_size, vocabulary_size, batch_size):
    """Analytic model FLOPs of one step: 3x the forward (matmuls only)."""
    width, mlp = config["hidden_dim"], config["mlp_dim"]
    patch, layers = config["patch_size"], config["num_layers"]
    patches = (image_size // patch) ** 2
    tokens = patches + 1
    forward = 2 * patches * patch * patch * 3 * width  # patchify
    per_layer = 2 * tokens * width * 3 * width  # qkv
    per_layer += 2 * 2 * tokens * tokens * width  # q k^T and attn v
    per_layer += 2 * tokens * width * width  # out_proj
    per_layer += 2 * 2 * tokens * width * mlp  # c_fc and c_proj
    forward += layers * per_layer + 2 * width * vocabulary_size  # head
    return 3.0 * forward * batch_size


def cpu_info():
    """CPU model, usable cores and the ISA flags that matter here."""
    model, flags = "unknown", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
    except OSError:
        pass
    cores = (
        len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count()
    )
    return {
        "cpu_model": model,
        "cpu_cores": cores,
        "isa": {flag: flag in flags for flag in ISA_FLAGS},
    }


def matmul_ceiling(args):
    """Times each library's matmul in its own process (PyTorch first; on
    a GPU PyTorch's only); returns `step_measure.matmul_ceiling`."""
    import step_measure

    def measure(library):
        # As its own Keras backend: a framework that imports Keras then
        # loads no other (TensorFlow + PyTorch's Triton crash together).
        flags = ["--matmul-library", library]
        return run_child(args, "matmul", backend=library, extra=flags)

    results = [measure("torch")]
    if results[0]["device_name"] == "cpu":
        results += [measure(library) for library in step_measure.CPU_MATMULS]
    return step_measure.matmul_ceiling(results)


def run_child(args, role, backend=None, extra=()):
    """Runs one side in a fresh process; returns its JSON result."""
    env = dict(
        os.environ,
        TF_CPP_MIN_LOG_LEVEL="3",
        PYTHONPATH=os.pathsep.join(
            p for p in (ROOT, os.environ.get("PYTHONPATH")) if p
        ),
    )
    if backend:
        env["KERAS_BACKEND"] = backend
    command = [sys.executable, os.path.abspath(__file__), "--role", role]
    command += child_flags(args) + list(extra)
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    lines = done.stdout.strip().splitlines()
    if done.returncode or not lines or not lines[-1].startswith("{"):
        raise SystemExit(
            f"The {role} side ({backend or 'torch'}) failed with exit code "
            f"{done.returncode}:\n{done.stderr[-4000:]}"
        )
    return json.loads(lines[-1])


def child_flags(args):
    flags = []
    for name in (
        "preset",
        "dtype",
        "batch_size",
        "image_size",
        "vocabulary_size",
        "num_layers",
        "steps",
        "warmup",
        "matmul_size",
        "device",
        "jit_compile",
        "reference_compile",
    ):
        value = getattr(args, name)
        if value is not None:
            flags += [f"--{name.replace('_', '-')}", str(value)]
    for name in ("remat", "own_framework_only"):  # switches
        if getattr(args, name):
            flags.append(f"--{name.replace('_', '-')}")
    return flags


def block_other_frameworks(backend):
    """Makes the frameworks of the other Keras backends unimportable here."""
    for framework in ("jax", "tensorflow", "torch"):
        if framework != backend:
            sys.modules[framework] = None  # `import` raises ImportError


def summary(times):
    return {
        "ms_median": round(1e3 * statistics.median(times), 1),
        "ms_min": round(1e3 * min(times), 1),
        "ms_max": round(1e3 * max(times), 1),
        "ms_steps": [round(1e3 * t, 1) for t in times],
    }


def main_parent(args):
    backends = args.backends or os.environ.get("KERAS_BACKEND", "jax")
    backends = [b.strip() for b in backends.split(",") if b.strip()]
    config = backbone_config(args)
    flops = vit_train_flops(
        config, args.image_size, args.vocabulary_size, args.batch_size
    )
    load_before = os.getloadavg()
    matmul = matmul_ceiling(args)
    print(
        f"device: {matmul['device_name']}; matmul ceiling {matmul['gflops']}",
        flush=True,
    )
    sides = [] if args.no_reference else [("reference", None)]
    sides += [("ours", b) for b in backends]
    runs = {side: [] for side in sides}
    for round_index in range(args.rounds):
        for role, backend in sides:
            result = run_child(args, role, backend)
            runs[(role, backend)].append(result)
            print(
                f"round {round_index + 1} {backend or 'reference'}: "
                f"{summary(result['times'])['ms_median']} ms/step",
                flush=True,
            )
    peak = matmul["peak_flops"][args.dtype]
    base = {
        **cpu_info(),
        "device": matmul["device_name"],
        "matmul_gflops": matmul["gflops"],
        "matmul_gflops_by_library": matmul["gflops_by_library"],
        "peak_tflops_for_mfu": round(peak / 1e12, 3),
        "peak_source": matmul["peak_source"],
        "preset": args.preset,
        "num_layers": config["num_layers"],
        "dtype": args.dtype,
        "batch_size": args.batch_size,
        "image_size": args.image_size,
        "vocabulary_size": args.vocabulary_size,
        "step_gflop": round(flops / 1e9, 1),
        "rounds": args.rounds,
        "steps_per_round": args.steps,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }

    def side_stats(results, prefix):
        times = [t for r in results for t in r["times"]]
        median = statistics.median(times)
        out = {f"{prefix}{k}": v for k, v in summary(times).items()}
        cpu = statistics.median(t for r in results for t in r["cpu_times"])
        # CPU seconds of all the process's threads: the work, less exposed
        # to other load than the wall clock (spinning thread pools count).
        out[f"{prefix}cpu_ms_median"] = round(1e3 * cpu, 1)
        out[f"{prefix}page_faults_median"] = statistics.median(
            f for r in results for f in r["page_faults"]
        )
        out[f"{prefix}images_per_second"] = round(args.batch_size / median, 2)
        out[f"{prefix}mfu"] = round(flops / median / peak, 4)
        out[f"{prefix}peak_rss_mb"] = max(r["peak_rss_mb"] for r in results)
        # What the step adds on top of the resident model, optimizer state
        # and framework runtime.
        out[f"{prefix}step_rss_mb"] = round(
            max(
                r["peak_rss_mb"] - (r["rss_before_steps_mb"] or 0)
                for r in results
            ),
            1,
        )
        # The libraries alone (for ours: Keras, keras-hub and, through
        # keras-hub, TensorFlow when it is installed).
        out[f"{prefix}rss_after_imports_mb"] = max(
            r["rss_after_imports_mb"] or 0 for r in results
        )
        if results[0].get("peak_device_mb") is not None:
            out[f"{prefix}peak_device_mb"] = max(
                r["peak_device_mb"] for r in results
            )
        out[f"{prefix}others_cpu_share"] = round(
            max(r["others_cpu_share"] for r in results), 3
        )
        out[f"{prefix}setup"] = results[0]["setup"]
        return out, median

    reference = {}
    if not args.no_reference:
        reference, ref_median = side_stats(
            runs[("reference", None)], "reference_"
        )
    lines = []
    for backend in backends:
        ours, median = side_stats(runs[("ours", backend)], "")
        result = {"backend": backend, **base, **ours, **reference}
        if reference:
            result["ratio_vs_reference"] = round(ref_median / median, 3)
            result["cpu_ratio_vs_reference"] = round(
                reference["reference_cpu_ms_median"] / ours["cpu_ms_median"], 3
            )
            result["peak_rss_vs_reference"] = round(
                ours["peak_rss_mb"] / reference["reference_peak_rss_mb"], 3
            )
            # What the model, optimizer and step hold beyond the libraries.
            beyond = ours["peak_rss_mb"] - ours["rss_after_imports_mb"]
            reference_beyond = (
                reference["reference_peak_rss_mb"]
                - reference["reference_rss_after_imports_mb"]
            )
            result["peak_rss_beyond_imports_vs_reference"] = round(
                beyond / reference_beyond, 3
            )
        lines.append(result)
        print(
            f"{backend} {args.dtype}: {ours['ms_median']} ms/step, "
            f"{ours['images_per_second']} img/s, MFU {ours['mfu']:.1%}"
            + (
                f"; reference {reference['reference_ms_median']} ms/step, "
                f"ratio {result['ratio_vs_reference']}x, memory "
                f"{result['peak_rss_vs_reference']}x"
                if reference
                else ""
            ),
            flush=True,
        )
    if args.json:
        for result in lines:
            print(json.dumps(result))
    return 0


if __name__ == "__main__":
    cli_args = parse_args()
    if cli_args.role is None:
        sys.exit(main_parent(cli_args))
    if cli_args.role == "ours" and cli_args.own_framework_only:
        block_other_frameworks(os.environ.get("KERAS_BACKEND", "jax"))
    sys.path.insert(0, ROOT)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import step_measure
    import train_step_sides

    roles = {
        "matmul": step_measure.main_matmul,
        "ours": train_step_sides.main_ours,
        "reference": train_step_sides.main_reference,
    }
    sys.exit(roles[cli_args.role](cli_args))
