"""The conditional generator and critic of MINs, as design-baselines builds them (plain torch).

Kumar, Levine, "Model Inversion Networks for Model-Based Optimization", NeurIPS 2020
(arXiv:1912.13464), as released in design-baselines (``design_baselines/mins/nets.py``:
``Discriminator`` 88-259, ``DiscreteGenerator`` 455-542, ``ContinuousGenerator`` 667-751), which
the IGNITE repository runs unchanged (``mins_IGNITE/nets.py`` is the same file). Generator and
critic share one layout, conditioned on the score ``y`` at every layer:

    e = Dense_h(y)                                     (a linear embedding of the score)
    a_0 = input   (generator: z ~ N(0, I) of size ``latent_size``; critic: the flattened design)
    a_j = leaky_relu_0.2(LayerNorm(Dense_h([a_{j-1}, e]))),   j = 1, 2, 3
    out = Dense([a_3, e])

The generator's output is ``L·C`` logits, a per-position Gumbel-softmax sample of
``log_softmax(logits)`` at the given temperature (discrete designs, ``(n, L, C)``), or the
design itself (continuous, ``(n, D)``); the critic's is one number. Keras' defaults:
Glorot-uniform dense weights with zero bias, LayerNorm with ε = 1e-3.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from lightning_mbo.functional.mins import gumbel_softmax

_SLOPE = 0.2  # tf.nn.leaky_relu(alpha=0.2), as released
_LN_EPS = 1e-3  # Keras LayerNormalization's default


class ConditionedMLP(nn.Module):
    """Three LayerNorm-ed hidden layers, the score's embedding concatenated to every layer's input.

    Args:
        n_in: size of the input (latent or flattened design).
        n_out: size of the output.
        hidden: width of the embedding and of every hidden layer (released: 1024).
        generator: the random stream of the initialisation (``None``: torch's global one).
    """

    def __init__(self, n_in: int, n_out: int, hidden: int = 1024, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.embed = nn.Linear(1, hidden)
        self.dense = nn.ModuleList([nn.Linear(n_in + hidden, hidden), nn.Linear(2 * hidden, hidden),
                                    nn.Linear(2 * hidden, hidden), nn.Linear(2 * hidden, n_out)])
        self.norms = nn.ModuleList([nn.LayerNorm(hidden, eps=_LN_EPS) for _ in range(3)])
        for layer in [self.embed, *self.dense]:
            nn.init.xavier_uniform_(layer.weight, generator=generator)
            nn.init.zeros_(layer.bias)

    def forward(self, a: Tensor, y: Tensor) -> Tensor:
        """``(n, n_out)`` for inputs ``a`` ``(n, n_in)`` and scores ``y`` ``(n,)``."""
        e = self.embed(y.reshape(-1, 1).to(a))
        for dense, norm in zip(self.dense[:-1], self.norms, strict=True):
            a = F.leaky_relu(norm(dense(torch.cat([a, e], -1))), _SLOPE)
        return self.dense[-1](torch.cat([a, e], -1))


class ConditionalGenerator(nn.Module):
    """``G(z, y)``: designs conditioned on a score.

    Args:
        shape: a design's shape: ``(L,)`` positions of a discrete sequence or ``(D,)`` features.
        num_classes: alphabet size ``C`` of a discrete task; ``None``: continuous designs.
        latent_size: size of ``z`` (released: 32).
        hidden: width of every layer (released: 1024).
        generator: the random stream of the initialisation.
    """

    def __init__(self, shape: tuple[int, ...], num_classes: int | None = None, latent_size: int = 32,
                 hidden: int = 1024, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.shape, self.num_classes, self.latent_size = tuple(shape), num_classes, latent_size
        self.out_shape = (*self.shape, num_classes) if num_classes is not None else self.shape
        self.body = ConditionedMLP(latent_size, math.prod(self.out_shape), hidden, generator)

    def forward(self, z: Tensor, y: Tensor) -> Tensor:
        """``(n, *shape, C)`` logits (discrete) or ``(n, *shape)`` designs (continuous) for
        ``z`` ``(n, latent_size)`` and ``y`` ``(n,)``."""
        return self.body(z, y).reshape(-1, *self.out_shape)

    def sample(self, y: Tensor, temp: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
        """Designs for scores ``y`` ``(n,)`` at fresh ``z ~ N(0, I)``: relaxed one-hot
        ``(n, L, C)`` at temperature ``temp`` (discrete) or ``(n, D)`` (continuous; ``temp`` unused)."""
        z = torch.randn((y.shape[0], self.latent_size), generator=generator, device=y.device, dtype=y.dtype)
        out = self(z, y)
        return out if self.num_classes is None else gumbel_softmax(out, temp, generator)


class ConditionalCritic(nn.Module):
    """``D(x, y)``: the Wasserstein critic of a design given a score.

    Args:
        input_size: flattened size of a design as the generator emits it (``L·C`` or ``D``).
        hidden: width of every layer (released: 1024).
        generator: the random stream of the initialisation.
    """

    def __init__(self, input_size: int, hidden: int = 1024, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.body = ConditionedMLP(input_size, 1, hidden, generator)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """``(n,)`` critic values of designs ``x`` ``(n, ...)`` given scores ``y`` ``(n,)``."""
        return self.body(x.flatten(1), y)[:, 0]
