"""Plain networks: stacked MLP ensembles whose members share one set of batched weights.

An ensemble of ``M`` MLPs is stored as weights of shape ``(M, in, out)`` and run with one
``torch.baddbmm`` per layer, so ``M`` members cost one batched matmul instead of ``M``
sequential ones. Every parameter has the member dimension first; code that needs one
member's tensors (per-member gradient norms, per-candidate proxy copies) slices dim 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

Activation = Literal["relu", "leaky_relu", "tanh", "swish", "softplus"]
Init = Literal["torch", "glorot"]

_ACTIVATIONS = {
    "relu": F.relu,
    # Keras' LeakyReLU default slope, as in the design-baselines surrogate.
    "leaky_relu": lambda x: F.leaky_relu(x, 0.3),
    "tanh": torch.tanh,
    "swish": F.silu,
    # Keras' "softplus", log(1 + e^x), RoMA's (torch turns linear above 20: the same to float32 rounding).
    "softplus": F.softplus,
}


# Derivatives of the activations with respect to their input (hand-written backward passes).
_ACTIVATION_GRADS = {
    "relu": lambda z: (z > 0).to(z.dtype),
    "leaky_relu": lambda z: 0.3 + 0.7 * (z > 0).to(z.dtype),
    "tanh": lambda z: 1 - torch.tanh(z) ** 2,
    "swish": lambda z: torch.sigmoid(z) * (1 + z * (1 - torch.sigmoid(z))),
    "softplus": torch.sigmoid,
}


def activation_fn(name: str):
    """Return the activation function called ``name``."""
    try:
        return _ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(_ACTIVATIONS)}") from None


def activation_grad_fn(name: str):
    """Return the derivative ``act'(z)`` of the activation called ``name``."""
    activation_fn(name)  # same error for an unknown name
    return _ACTIVATION_GRADS[name]


class StackedLinear(nn.Module):
    """``M`` independent affine maps applied as one batched matmul.

    Args:
        members: number of stacked members ``M``.
        in_features: input size.
        out_features: output size.
        init: ``"torch"`` (``nn.Linear``'s default uniform init) or ``"glorot"``
            (Keras' ``Dense`` default: Glorot-uniform weights, zero bias).
    """

    def __init__(self, members: int, in_features: int, out_features: int, init: Init = "torch") -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(members, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(members, 1, out_features))
        self.init = init
        self.reset_parameters()

    def reset_parameters(self) -> None:
        fan_in, fan_out = self.weight.shape[1], self.weight.shape[2]
        if self.init == "glorot":
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            nn.init.uniform_(self.weight, -bound, bound)
            nn.init.zeros_(self.bias)
        elif self.init == "torch":
            # nn.Linear: kaiming_uniform(a=sqrt(5)) on the weight == U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
            bound = 1.0 / math.sqrt(fan_in)
            nn.init.uniform_(self.weight, -bound, bound)
            nn.init.uniform_(self.bias, -bound, bound)
        else:
            raise ValueError(f"unknown init {self.init!r}; choose 'torch' or 'glorot'")

    @torch.no_grad()
    def reset_members(self, start: int, stop: int, generator: torch.Generator) -> None:
        """Initialise members ``start .. stop - 1`` as :meth:`reset_parameters` does, drawing from
        ``generator`` (weights first, then biases), so a block's draws depend on its generator only."""
        fan_in, fan_out = self.weight.shape[1], self.weight.shape[2]
        w, b = self.weight[start:stop], self.bias[start:stop]
        bound = math.sqrt(6.0 / (fan_in + fan_out)) if self.init == "glorot" else 1.0 / math.sqrt(fan_in)
        w.copy_(torch.rand(w.shape, generator=generator, dtype=w.dtype) * (2 * bound) - bound)
        if self.init == "glorot":
            b.zero_()
        else:
            b.copy_(torch.rand(b.shape, generator=generator, dtype=b.dtype) * (2 * bound) - bound)

    def forward(self, x: Tensor) -> Tensor:
        """Map ``x`` of shape ``(M, B, in)`` to ``(M, B, out)``."""
        return torch.baddbmm(self.bias, x, self.weight)


class StackedEmbedding(nn.Module):
    """``M`` independent embedding tables for the classes of a discrete design, flattened.

    Keras' ``Embedding`` as design-baselines' REINFORCE and CbAS members use it (its default
    init: uniform in ``[-0.05, 0.05]``).

    Args:
        members: number of stacked members ``M``.
        num_classes: alphabet size ``C``.
        width: embedding width ``E``.
    """

    def __init__(self, members: int, num_classes: int, width: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(members, num_classes, width).uniform_(-0.05, 0.05))
        self._captured: list[Tensor] | None = None

    @contextmanager
    def capture_lookups(self) -> Iterator[list[Tensor]]:
        """Within the block, every forward appends its looked-up vectors ``(M, B * L, E)`` (one row
        per lookup, before flattening) to the yielded list: the inputs of the gradient TensorFlow
        hands an embedding as ``IndexedSlices`` (used by IGNITE's released norm)."""
        self._captured = []
        try:
            yield self._captured
        finally:
            self._captured = None

    @torch.no_grad()
    def reset_members(self, start: int, stop: int, generator: torch.Generator) -> None:
        """Draw members ``start .. stop - 1``'s tables uniformly in ``[-0.05, 0.05]`` from ``generator``."""
        w = self.weight[start:stop]
        w.copy_(torch.rand(w.shape, generator=generator, dtype=w.dtype) * 0.1 - 0.05)

    def forward(self, x: Tensor) -> Tensor:
        """Map class ids ``(M, B, L)`` (integers, possibly stored as floats) to ``(M, B, L * E)``."""
        ids = x.round().long() if x.dtype.is_floating_point else x.long()
        m, b, length = ids.shape
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.weight.shape[1]):
            raise ValueError(f"class ids must lie in [0, {self.weight.shape[1]}), got [{int(ids.min())}, "
                             f"{int(ids.max())}]")
        rows = torch.gather(self.weight, 1, ids.reshape(m, b * length, 1).expand(-1, -1, self.weight.shape[2]))
        if self._captured is not None:
            self._captured.append(rows)
        return rows.reshape(m, b, length * self.weight.shape[2])


class StackedMLP(nn.Module):
    """An ensemble of ``M`` MLPs ``in -> hidden[0] -> ... -> out`` with stacked weights.

    Args:
        members: number of members ``M``.
        in_features: input size ``D`` (flattened design).
        hidden: hidden layer widths.
        out_features: output size per member.
        activation: hidden activation.
        init: weight initialisation, see :class:`StackedLinear`.
        embedding: ``(C, E)``: the inputs are ``D`` class ids, each embedded in ``E`` dimensions
            (:class:`StackedEmbedding`) before the first layer; ``None``: continuous features.
    """

    def __init__(
        self,
        members: int,
        in_features: int,
        hidden: Sequence[int] = (2048, 2048),
        out_features: int = 1,
        activation: Activation = "relu",
        init: Init = "torch",
        embedding: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if members < 1:
            raise ValueError(f"members must be >= 1, got {members}")
        self.embed = StackedEmbedding(members, *embedding) if embedding is not None else None
        sizes = [in_features * (embedding[1] if embedding is not None else 1), *hidden, out_features]
        self.members = members
        self.in_features = in_features
        self.activation = activation
        self._act = activation_fn(activation)
        self.layers = nn.ModuleList(
            StackedLinear(members, a, b, init=init) for a, b in zip(sizes[:-1], sizes[1:], strict=True)
        )

    def reset_members(self, start: int, stop: int, generator: torch.Generator) -> None:
        """Initialise members ``start .. stop - 1`` from ``generator`` alone (embedding, then each layer
        in order): a block of members seeded alike is initialised alike wherever it sits in the stack."""
        for module in ([self.embed] if self.embed is not None else []) + list(self.layers):
            module.reset_members(start, stop, generator)

    def capture_lookups(self):
        """:meth:`StackedEmbedding.capture_lookups` of the embedding (an empty list without one)."""
        return self.embed.capture_lookups() if self.embed is not None else nullcontext([])

    def forward(self, x: Tensor) -> Tensor:
        """Run every member.

        Args:
            x: ``(B, D)`` (the same inputs for every member) or ``(M, B, D)``
                (each member its own inputs).

        Returns:
            ``(M, B, out_features)``.
        """
        members = self.layers[0].weight.shape[0]  # a slice of the members under torch.func.functional_call
        if x.dim() == 2:
            x = x.unsqueeze(0).expand(members, -1, -1)
        if x.dim() != 3 or x.shape[0] != members or x.shape[-1] != self.in_features:
            raise ValueError(
                f"expected inputs of shape (B, {self.in_features}) or ({members}, B, {self.in_features}), "
                f"got {tuple(x.shape)}"
            )
        if self.embed is not None:
            x = self.embed(x)
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = self._act(x)
        return x


def member_forward(params: dict[str, Tensor], x: Tensor, activation: str = "relu") -> Tensor:
    """Functional forward of ONE member of a :class:`StackedMLP`.

    Args:
        params: the member's tensors, named as in ``StackedMLP.named_parameters()``
            (``layers.{i}.weight`` of shape ``(in, out)``, ``layers.{i}.bias`` of shape
            ``(1, out)``), i.e. one slice along the member dimension.
        x: ``(B, D)`` inputs.
        activation: hidden activation.

    Returns:
        ``(B, out)``. Composes with ``torch.func.vmap`` over stacked params.
    """
    act = activation_fn(activation)
    n = len(params) // 2
    for i in range(n):
        x = x @ params[f"layers.{i}.weight"] + params[f"layers.{i}.bias"]
        if i < n - 1:
            x = act(x)
    return x


class _Activation(nn.Module):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.fn = activation_fn(name)

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x)


def member_module(params: dict[str, Tensor], activation: str = "relu") -> nn.Sequential:
    """One member as a plain ``nn.Sequential`` of ``nn.Linear`` (for per-proxy reference code, e.g. ``higher``).

    Args:
        params: one member's tensors as in :func:`member_forward` (weight ``(in, out)``, bias ``(1, out)``).
        activation: hidden activation.
    """
    n = len(params) // 2
    layers: list[nn.Module] = []
    for i in range(n):
        w, b = params[f"layers.{i}.weight"], params[f"layers.{i}.bias"]
        lin = nn.Linear(w.shape[0], w.shape[1], device=w.device, dtype=w.dtype)
        with torch.no_grad():
            lin.weight.copy_(w.T)
            lin.bias.copy_(b[0])
        layers.append(lin)
        if i < n - 1:
            layers.append(_Activation(activation))
    return nn.Sequential(*layers)


def member_params(module: nn.Sequential) -> dict[str, Tensor]:
    """Inverse of :func:`member_module`: the member's tensors in :class:`StackedMLP`'s layout."""
    linears = [m for m in module if isinstance(m, nn.Linear)]
    out = {}
    for i, lin in enumerate(linears):
        out[f"layers.{i}.weight"] = lin.weight.detach().T
        out[f"layers.{i}.bias"] = lin.bias.detach()[None]
    return out
