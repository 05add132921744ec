"""Saving and restoring a torch network as the flat numeric arrays of a model file."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from retailgan.errors import ModelFileError


def module_arrays(module: nn.Module, prefix: str) -> dict[str, np.ndarray]:
    """``module``'s parameters and buffers as numpy copies keyed ``prefix.name``."""
    return {f"{prefix}.{k}": v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}


def load_module_arrays(module: nn.Module, arrays: dict[str, np.ndarray], prefix: str, model: str) -> nn.Module:
    """Fill ``module`` from the ``prefix.*`` arrays written by :func:`module_arrays`.

    Every tensor the module has must be saved with its dtype and shape (a 0-d tensor may be
    saved as one entry), and nothing else under ``prefix``; errors name the array."""
    expected = module.state_dict()
    cut = len(prefix) + 1
    extra = sorted(k for k in arrays if k.startswith(f"{prefix}.") and k[cut:] not in expected)
    if extra:
        raise ModelFileError(f"{extra[0]}: not part of the {model} network that the config and id maps describe")
    state = {}
    for name, ref in expected.items():
        key = f"{prefix}.{name}"
        if key not in arrays:
            raise ModelFileError(f"{key}: missing ({model} network)")
        a = arrays[key]
        dtype = torch.empty(0, dtype=ref.dtype).numpy().dtype
        if a.dtype != dtype:
            raise ModelFileError(f"{key}: dtype {a.dtype}, expected {dtype}")
        shape = tuple(ref.shape)
        if a.shape != shape and not (shape == () and a.shape == (1,)):
            raise ModelFileError(f"{key}: shape {a.shape}, expected {shape} (from the config and id maps)")
        state[name] = torch.from_numpy(np.array(a).reshape(shape))
    module.load_state_dict(state, strict=True)
    return module
