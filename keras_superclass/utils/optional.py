"""TensorFlow as an optional dependency of the model path.

The models, layers, losses and metrics use `keras.ops` only and import
without TensorFlow (e.g. on a GPU host with only JAX or PyTorch). What
runs on `tf.data` (readers, tokenizers, preprocessors, image converters)
needs it; those names resolve lazily and raise a clear error without it.
"""

import importlib
import importlib.util


def has_tensorflow():
    """Whether TensorFlow can be imported (found, not imported here)."""
    try:
        return importlib.util.find_spec("tensorflow") is not None
    except (ImportError, ValueError):
        return False


def import_tf_dependent(module, name=None):
    """Imports `module` (and returns its `name`), which needs TensorFlow.

    Raises:
        ImportError: naming what needs TensorFlow and how to install it.
    """
    try:
        value = importlib.import_module(module)
    except ImportError as error:
        if error.name is None or error.name.split(".")[0] != "tensorflow":
            raise
        what = name or module
        raise ImportError(
            f"{what} needs TensorFlow (the input pipeline, tokenizers and "
            f"preprocessors run on tf.data on every backend), which is not "
            f"installed. Install it (`pip install tensorflow-cpu`), or build "
            f"the task with `preprocessor=None` to train or run the model "
            f"alone."
        ) from error
    return value if name is None else getattr(value, name)


class LazyClass:
    """A class attribute holding a class that needs TensorFlow.

    Resolved on first access, so the owning class imports without
    TensorFlow (e.g. a task's `preprocessor_cls`).
    """

    def __init__(self, module, name):
        self.module = module
        self.name = name

    def __get__(self, instance, owner=None):
        return import_tf_dependent(self.module, self.name)


def lazy_module_getattr(module_name, lazy_names):
    """A module `__getattr__` that imports `lazy_names[name]` on use.

    Args:
        module_name: the package's `__name__` (for the error message).
        lazy_names: `{name: module}`; the name is imported from it.
    """

    def __getattr__(name):
        if name not in lazy_names:
            raise AttributeError(
                f"module {module_name!r} has no attribute {name!r}"
            )
        return import_tf_dependent(lazy_names[name], name)

    return __getattr__
