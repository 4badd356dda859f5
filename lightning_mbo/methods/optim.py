"""The surrogates' optimizer: torch's Adam with its fused kernel where the device has one."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor
from torch.utils._foreach_utils import _get_fused_kernels_supported_devices


def adam(params: Iterable[Tensor], **kwargs) -> torch.optim.Adam:
    """``torch.optim.Adam(params, **kwargs)``, fused where every parameter's device supports it.

    The fused kernel makes one pass over each tensor (the default per-tensor loop on CPU makes
    several, with temporaries: about 5x slower on a 2x2048 ensemble). It computes the same
    update (Kingma and Ba, ICLR 2015, Algorithm 1, torch's form): the first moment bit for bit,
    the second moment and the parameter up to the rounding of the last float32 operations,
    which it evaluates in another order (a couple of units in the last place per step; see
    ``tests/methods/test_optim.py``).
    """
    params = list(params)
    devices = _get_fused_kernels_supported_devices()
    fused = all(p.device.type in devices and p.is_floating_point() for p in params)
    return torch.optim.Adam(params, fused=fused or None, **kwargs)
