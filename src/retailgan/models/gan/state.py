"""Saving and restoring a torch network as the flat numeric arrays of a model file."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from retailgan.errors import ConfigError


def module_arrays(module: nn.Module, prefix: str) -> dict[str, np.ndarray]:
    """``module``'s parameters and buffers as numpy copies keyed ``prefix.name``."""
    return {f"{prefix}.{k}": v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}


def load_module_arrays(module: nn.Module, arrays: dict[str, np.ndarray], prefix: str, model: str) -> nn.Module:
    """Fill ``module`` from the ``prefix.*`` arrays written by :func:`module_arrays` (strict)."""
    cut = len(prefix) + 1
    state = {k[cut:]: torch.tensor(np.asarray(v)) for k, v in arrays.items() if k.startswith(f"{prefix}.")}
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ConfigError(f"{model}: saved network {prefix!r} does not match the config and id maps ({exc})") from None
    return module
