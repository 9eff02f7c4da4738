"""Reading reference checkpoint files into NumPy state dicts.

Each format gets its own check, so a damaged or mislabelled file gives one
clear error naming the file and what is wrong with it.
"""

import os
import zipfile

import numpy as np


def to_numpy(value):
    """A tensor-like (torch, NumPy, JAX, TF) as a NumPy array."""
    if hasattr(value, "detach"):  # torch.Tensor
        value = value.detach().cpu()
        if value.is_floating_point():
            value = value.float()  # bfloat16/float16 have no NumPy twin
        return value.numpy()
    return np.asarray(value)


def _read_safetensors(path):
    from safetensors import SafetensorError
    from safetensors import safe_open
    from safetensors.numpy import load_file

    try:  # Checks the header (and that the file covers it) first.
        with safe_open(path, framework="numpy"):
            pass
    except (SafetensorError, OSError) as error:
        raise ValueError(
            f"{path!r} is not a valid .safetensors file ({error}); it may "
            f"be truncated or in another format. Download or export it "
            f"again."
        ) from None
    try:
        return dict(load_file(path))
    except TypeError:  # bfloat16 has no NumPy dtype: go through torch.
        from safetensors.torch import load_file as load_torch

        return {k: to_numpy(v) for k, v in load_torch(path).items()}


def _read_npz(path):
    # np.load takes any file that is not a zip archive for a pickle.
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"{path!r} is not a .npz archive (a zip of .npy arrays, as "
            f"written by numpy.savez); it may be truncated or in another "
            f"format."
        )
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise ValueError(
            f"{path!r} is a damaged .npz archive ({error})."
        ) from None
    except ValueError as error:  # an array of Python objects
        raise ValueError(
            f"{path!r} holds arrays of Python objects (pickled data), which "
            f"are never loaded; save plain numeric arrays ({error})."
        ) from None


def _torch_load_reason(error):
    """What `torch.load` objected to, without its advice to load with
    `weights_only=False` (arbitrary code execution)."""
    text = str(error)
    marker = "WeightsUnpickler error:"
    if marker in text:
        reason = text.split(marker, 1)[1].strip().split("\n\n")[0]
        return f"not tensors and plain containers: {reason.strip()}"
    first_line = text.strip().splitlines()[0] if text.strip() else ""
    return f"{type(error).__name__}: {first_line}"


def read_state_dict(path):
    """Reads a checkpoint file into a `{name: np.ndarray}` dict.

    `.pt` / `.pth` / `.bin` / `.ckpt` go through
    `torch.load(weights_only=True)` (tensors and plain containers only,
    never arbitrary pickled objects); `.safetensors` and `.npz` need no
    PyTorch.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No checkpoint file at {path!r}.")
    lower = path.lower()
    if lower.endswith(".safetensors"):
        return _read_safetensors(path)
    if lower.endswith(".npz"):
        return _read_npz(path)
    if lower.endswith((".pt", ".pth", ".bin", ".ckpt")):
        try:
            import torch
        except ImportError as error:
            raise ImportError(
                f"Reading {path!r} needs PyTorch (`pip install torch`); or "
                f"convert it to .safetensors or .npz first."
            ) from error
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            raise ValueError(
                f"Could not read {path!r} as a weights-only PyTorch "
                f"checkpoint ({_torch_load_reason(error)}). Only tensors "
                f"and plain containers are accepted; arbitrary pickled "
                f"objects are never loaded. From a checkpoint you trust "
                f"that holds other objects, save its state dict alone "
                f"(`torch.save(model.state_dict(), 'weights.pt')`) or "
                f"write it as .safetensors."
            ) from error
        return data
    raise ValueError(
        f"Unknown checkpoint format {path!r}: expected .pt, .pth, .bin, "
        f".ckpt, .safetensors or .npz."
    )
