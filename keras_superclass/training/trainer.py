"""`train(config)`: config-driven pretraining with `model.fit`.

One "epoch" here is `training.steps_per_epoch` optimizer steps over an
endless data stream: each ends with a checkpoint, a CSV/TensorBoard log row,
a line counting the records the reader skipped (corrupt data) and a fresh
Keras progress bar. `resume=True` restores the last checkpoint
(weights, optimizer state and so step and learning-rate position, IDF
statistics) and fast-forwards the data stream past every batch already
used, so a deterministic run continues exactly where it stopped.
"""

import csv
import math
import os
import time
import warnings

import keras

from keras_superclass.training.builders import build_loss
from keras_superclass.training.builders import build_preprocessor
from keras_superclass.training.builders import build_task
from keras_superclass.training.builders import build_train_dataset
from keras_superclass.training.checkpoints import CheckpointCallback
from keras_superclass.training.checkpoints import CheckpointError
from keras_superclass.training.checkpoints import CheckpointManager
from keras_superclass.training.config import save_config
from keras_superclass.training.config_checks import check_paths
from keras_superclass.training.image_text_builders import is_image_text
from keras_superclass.utils import cpu_memory
from keras_superclass.utils import xla_flags
from keras_superclass.utils.io import atomic_write_text


def _truncate_log(path, initial_epoch):
    """Drops log rows of epochs that are about to be trained again."""
    if not os.path.exists(path):
        return
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    kept = [rows[0]] + [r for r in rows[1:] if int(r[0]) < initial_epoch]
    text = "".join(",".join(r) + "\n" for r in kept)
    atomic_write_text(path, text)


def check_labels(dataset, config):
    """Stops a run whose first batch has no label at all (all padding):
    the loss would fall while the model learns nothing."""
    _, labels = next(iter(dataset.take(1)))
    if not (labels.numpy() >= 0).any():
        data = config["data"]
        if config["model"]["task"] == "catlip":
            why = (
                f"no caption word of the batch matched the synset "
                f"vocabulary {data['synset_vocabulary']!r}; build it from "
                f"these captions with `keras-superclass synsets`"
            )
        else:
            why = (
                f"the tokenizer {data['tokenizer']!r} maps every caption of "
                f"the batch to special tokens (e.g. a word vocabulary learnt "
                f"on other data); build one with `keras-superclass vocab`"
            )
        raise ValueError(
            f"Every label of the first training batch from "
            f"{data['train']!r} is padding: {why}."
        )


RECIPE_KEYS = (
    "learning_rate",
    "warmup_steps",
    "weight_decay",
    "beta_1",
    "beta_2",
    "epsilon",
    "min_learning_rate_ratio",
    "clipnorm",
    "global_clipnorm",
    "ema_momentum",
)


def compile_from_config(model, config, loss):
    """Compiles with the task's recipe, overridden by what the config sets."""
    t = config["training"]
    recipe = {k: t[k] for k in RECIPE_KEYS if t[k] is not None}
    if "ema_momentum" in recipe:
        recipe["use_ema"] = True
    if t["accumulation_steps"] > 1:
        recipe["gradient_accumulation_steps"] = t["accumulation_steps"]
    model.compile(
        loss=loss,
        total_steps=t["total_steps"],
        steps_per_execution=t["steps_per_execution"],
        jit_compile=t["jit_compile"],
        **recipe,
    )


def build_compiled_model(config, training_loss=True):
    """The task a config describes, with the training optimizer.

    Seeds Keras with `data.seed` first, so every build of a config starts
    from the same weights.

    Args:
        config: a dict from `load_config`.
        training_loss: False compiles with the task's default loss instead
            of the config's (reads no loss files), e.g. for export.

    Returns:
        The compiled task, with its preprocessor (`build_preprocessor`).
    """
    keras.utils.set_random_seed(config["data"]["seed"])
    preprocessor = build_preprocessor(config)
    model = build_task(config, preprocessor)
    loss = "auto"
    if training_loss and is_image_text(config):
        loss = config["loss"]["contrastive"]
    elif training_loss:
        loss = build_loss(
            config, model.vocabulary_size, preprocessor.special_ids
        )
    compile_from_config(model, config, loss)
    return model


class _CSVLogger(keras.callbacks.CSVLogger):
    """A CSV log whose columns are the logged metrics only.

    Keras adds `val_*` columns (all `NA`) when the first epoch has no
    validation metrics; the trainer runs no validation. A resumed run
    keeps the columns of the header it appends to.
    """

    def on_epoch_end(self, epoch, logs=None):
        if self.keys is None:
            header = []
            if not self.append_header:  # appending to an existing log
                with open(self.filename, newline="", encoding="utf-8") as f:
                    header = next(csv.reader(f), [])[1:]
            self.keys = header or sorted(logs or {})
        super().on_epoch_end(epoch, logs)


class ThroughputLogger(keras.callbacks.Callback):
    """Adds `images_per_second` to the logs, so the progress bar, `log.csv`
    and TensorBoard show it.

    Wall clock between batch ends from each epoch's second batch on (the
    first holds compilation and the reader's start-up): input reading and
    the step together, as the run experiences them. `batch_size` is the
    images of one Keras step over all devices (the micro-batch).
    """

    def __init__(self, batch_size):
        super().__init__()
        self.batch_size = int(batch_size)
        self._start = None
        self._batches = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._start, self._batches = None, 0

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        if self._start is None:
            self._start = now
            return
        self._batches += 1
        if logs is not None:
            logs["images_per_second"] = self.images_per_second(now)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self._batches:
            logs["images_per_second"] = self.images_per_second()

    def images_per_second(self, now=None):
        elapsed = (now or time.perf_counter()) - self._start
        return self._batches * self.batch_size / max(elapsed, 1e-9)


def check_data_shards(manager, meta, distribution):
    """Warns when a run resumes with another number of data shards: each
    process then reads other files, so the data order differs from the
    interrupted run's (training itself continues correctly)."""
    before = meta.get("data_shards", 1)
    if before != distribution.data_shard_count:
        warnings.warn(
            f"The checkpoint in {manager.directory} was written by a run "
            f"reading {before} data shard(s) (processes); this one reads "
            f"{distribution.data_shard_count}. Training continues, but the "
            f"data order is not the interrupted run's.",
            stacklevel=2,
        )


def warn_if_bfloat16_is_slow_here(dtype_policy):
    """Warns when a bfloat16 policy runs slowly on this device.

    A CPU without bf16 matmul instructions (AVX512-BF16, AMX) runs a bf16
    step slower than a float32 one (benchmarks/README.md, eighteenth and
    twentieth passes). XLA:CPU (jax on a CPU) has
    bf16 matmul kernels only through YNNPACK, which
    `xla_flags.choose_cpu_matmuls` keeps for a bf16 run. Where a flag of
    the user's, or jax started before `train`, turned them off, XLA
    computes bf16 matmuls with its float32 kernels: the step is no faster
    than in float32 (sixteenth pass).
    """
    policy = keras.dtype_policies.get(dtype_policy)
    if policy.compute_dtype != "bfloat16" or not xla_flags.backend_on_cpu():
        return
    if xla_flags.cpu_has_bf16_matmul_instructions() is False:
        warnings.warn(
            f"training.dtype_policy is '{policy.name}', but this CPU has no "
            "bfloat16 matmul instructions (AVX512-BF16 or AMX), so a bf16 "
            "step runs slower than a float32 one on every backend (on such "
            "a CPU: jax and TensorFlow about 1.5x, PyTorch about 1.2x). Set "
            "training.dtype_policy=float32 on this machine.",
            stacklevel=2,
        )
        return
    if keras.backend.backend() != "jax" or xla_flags.cpu_bf16_dots_in_ynnpack():
        return
    warnings.warn(
        f"training.dtype_policy is '{policy.name}', but jax runs on the CPU "
        "with XLA's bfloat16 (YNNPACK) matmuls turned off in XLA_FLAGS, so "
        "XLA computes them with its float32 kernels and the step is no "
        "faster than in float32. Remove "
        f"'{xla_flags.CPU_MATMUL_FLAG}' from XLA_FLAGS (or set "
        f"'{xla_flags.CPU_MATMUL_FLAG}individual_dot') before jax starts, "
        "or set training.dtype_policy=float32.",
        stacklevel=2,
    )


def _report_finished(manager, meta, total_steps):
    steps = ", ".join(str(s) for s in manager.steps())
    print(
        f"The run in {manager.directory} is complete (step {meta['step']} "
        f"of {total_steps}): nothing to train. Its checkpoints (steps "
        f"{steps}) are in {manager.directory}; export one with "
        f"`keras-superclass export --run {manager.directory}`, or raise "
        f"training.total_steps to train further."
    )


def train(config, resume=False, callbacks=(), verbose="auto"):
    """Trains the model a config describes; returns `(model, history)`.

    The config's paths are checked first, and the run directory is only
    created once the model and the data stream are built. Resuming a run
    that already reached `training.total_steps` prints so and returns
    `(model, None)`. The model is built, compiled and trained under the
    config's `distribution` (one device, data or model parallel, one or
    several processes); `training.global_batch_size` stays the global
    batch, each process reads its share of the shards, and only the first
    process writes the run directory.

    Args:
        config: a dict from `load_config`.
        resume: continue from the last checkpoint of `checkpoint.dir`.
        callbacks: extra Keras callbacks.
        verbose: `model.fit` verbosity (progress bar by default).

    Raises:
        ConfigError: a missing file or directory the config names.
        CheckpointError: `resume` without a checkpoint, a checkpoint of
            another model, or a new run into a directory that already holds
            checkpoints (which it would overwrite).
    """
    from keras_superclass.distribution import activate

    check_paths(config)
    # Before jax first computes: XLA reads its CPU matmul choice then.
    policy = keras.dtype_policies.get(config["training"]["dtype_policy"])
    xla_flags.choose_cpu_matmuls(policy.compute_dtype)
    # Each step reuses the pages the last one freed (PyTorch on a CPU).
    cpu_memory.keep_freed_memory_for_training()
    # Before any other backend work: it may join a multi-host run.
    with activate(config["distribution"]) as distribution:
        return _train(config, resume, callbacks, verbose, distribution)


def _train(config, resume, callbacks, verbose, distribution):
    from keras_superclass.data import CorruptRecordReport

    t = config["training"]
    warn_if_bfloat16_is_slow_here(t["dtype_policy"])
    run_dir = config["checkpoint"]["dir"]
    manager = CheckpointManager(run_dir, keep=config["checkpoint"]["keep"])
    if not resume and manager.latest_step() is not None:
        raise CheckpointError(
            f"{run_dir} already holds checkpoints. Pass --resume to continue "
            f"that run, or set checkpoint.dir to a new directory."
        )
    keras.config.set_dtype_policy(t["dtype_policy"])
    # Same initial weights on every run of a config (and after --resume).
    model = build_compiled_model(config)

    initial_epoch = 0
    epochs = math.ceil(t["total_steps"] / t["steps_per_epoch"])
    if resume:
        meta = manager.restore(model)
        initial_epoch = meta["epoch"]
        if initial_epoch >= epochs:
            _report_finished(manager, meta, t["total_steps"])
            return model, None

        check_data_shards(manager, meta, distribution)
    model = distribution.prepare_model(model)

    micro_steps = t["steps_per_epoch"] * t["accumulation_steps"]
    # The data position is per process: each skips its own batches.
    dataset = build_train_dataset(
        config,
        model.preprocessor,
        skip_batches=initial_epoch * micro_steps,
        distribution=distribution,
    )
    check_labels(dataset, config)
    chief = distribution.is_chief
    if chief and verbose != 0:
        print(
            f"Training {t['total_steps']} steps at a global batch of "
            f"{t['global_batch_size']} on {distribution.description}."
        )
    if not resume and chief:  # now: a failed start leaves no directory
        os.makedirs(run_dir, exist_ok=True)
        save_config(config, os.path.join(run_dir, "config.yaml"))
    log_path = os.path.join(run_dir, "log.csv")
    if chief:
        _truncate_log(log_path, initial_epoch)
    shards = {"data_shards": distribution.data_shard_count}
    all_callbacks = [
        # First: the bar, the CSV and TensorBoard read what it adds.
        ThroughputLogger(t["micro_batch_size"]),
        # Before the report, so its line follows the finished epoch's bar.
        keras.callbacks.ProgbarLogger(),
        keras.callbacks.TerminateOnNaN(),
        # Every process saves (a collective step); the chief writes.
        CheckpointCallback(manager, extra=shards, write=chief),
        # Skipped (corrupt) records are counted by the reader; say so (in
        # a quiet run, and from each other process, only when it skipped).
        CorruptRecordReport(
            dataset,
            only_when_skipped=not chief or verbose == 0,
            prefix=f"process {distribution.process_index}: "
            if distribution.num_processes > 1
            else "",
        ),
    ]
    if chief:  # one writer of the run directory
        all_callbacks.insert(3, _CSVLogger(log_path, append=True))
    if config["checkpoint"]["tensorboard"] and chief:
        all_callbacks.append(
            keras.callbacks.TensorBoard(os.path.join(run_dir, "tensorboard"))
        )
    history = model.fit(
        dataset,
        epochs=epochs,
        initial_epoch=initial_epoch,
        steps_per_epoch=micro_steps,
        callbacks=all_callbacks + list(callbacks),
        verbose=verbose if chief else 0,  # one progress bar
        shuffle=False,  # the stream is shuffled by the reader
    )
    return model, history
