"""Training on several devices and hosts with the backends' own engines.

`activate(section)` turns the `distribution` section of a training config
(see `distribution.config`) into a `RunDistribution`, a context the
trainer enters around building, compiling and fitting the model:

- JAX: `keras.distribution` (`DataParallel`, `ModelParallel` with a
  `LayoutMap`; multi-host through `keras.distribution.initialize`).
- TensorFlow: `tf.distribute` (module `tensorflow_strategy`).
- PyTorch: `torch.distributed` DDP under `torchrun` (module `torch_ddp`).

Example:
>>> run = activate({"kind": "none"})
>>> run.kind, run.process_batch_size(64)
('none', 64)
"""

import importlib
import os

from keras_superclass.distribution.base import RunDistribution
from keras_superclass.distribution.base import UnsupportedDistribution
from keras_superclass.distribution.config import DEFAULTS
from keras_superclass.distribution.config import check_section

# Backend -> the module (in this package) holding its `activate(section)`.
BACKEND_MODULES = {
    "jax": "jax_distribution",
    "tensorflow": "tensorflow_strategy",
    "torch": "torch_ddp",
}


def _several_devices_or_processes(backend):
    """Whether `auto` should distribute on a backend other than JAX."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 or os.environ.get(
        "TF_CONFIG"
    ):
        return True  # launched by torchrun / as a tf.distribute worker
    if backend == "tensorflow":
        import tensorflow as tf

        return any(
            len(tf.config.list_logical_devices(kind)) > 1
            for kind in ("GPU", "TPU")
        )
    if backend == "torch":
        import torch

        return torch.cuda.device_count() > 1
    return False


def activate(section=None):
    """The `RunDistribution` a `distribution` config section asks for.

    On JAX this also joins a multi-host run when the launcher set the
    `KERAS_DISTRIBUTION_*` variables, so call it before any other work.

    Args:
        section: a dict of `distribution` keys (missing keys take the
            defaults of `distribution.config.DEFAULTS`); None: all defaults
            (`kind: auto`).

    Returns:
        A `RunDistribution`; enter it (`with run:`) around building,
        compiling and fitting the model.

    Raises:
        ValueError: a bad key or value, or a mesh that does not fit the
            devices; the message names the key and a fix.
        NotImplementedError: the backend has no distributed path yet.
    """
    import keras

    section = check_section(section)
    backend = keras.backend.backend()
    kind = section["kind"]
    if backend != "jax" and (
        kind == "none"
        or (kind == "auto" and not _several_devices_or_processes(backend))
    ):
        return RunDistribution()
    name = BACKEND_MODULES.get(backend)
    module = None
    if name is not None:
        qualified = f"{__name__}.{name}"
        try:
            module = importlib.import_module(qualified)
        except ModuleNotFoundError as error:
            if error.name != qualified:
                raise
    if module is None:
        raise UnsupportedDistribution(
            f"distribution.kind {kind!r} on the {backend} backend is not "
            f"available in this version (no module "
            f"keras_superclass.distribution.{name}). Use KERAS_BACKEND=jax "
            f"(keras.distribution), or distribution.kind=none."
        )
    return module.activate(section)


def is_chief():
    """True unless this is a non-first process of a multi-process run."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.process_index() == 0
    if backend == "torch":
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank() == 0
    return True


__all__ = ["DEFAULTS", "RunDistribution", "activate", "is_chief"]
