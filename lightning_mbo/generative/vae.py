"""The variational auto-encoder of CbAS, as design-baselines builds it (plain torch).

Brookes, Park, Listgarten, "Conditioning by adaptive sampling for robust design", ICML 2019,
as released in design-baselines (``design_baselines/cbas/nets.py``: ``Encoder``,
``DiscreteDecoder``, ``ContinuousDecoder``), which the IGNITE repository runs unchanged:

* encoder: (discrete) an embedding of each class, flattened; ``num_layers`` x (Dense ``hidden``,
  leaky ReLU 0.3); Dense ``2·latent`` -> ``(μ, s)``; ``s`` is soft-bounded by trainable bounds
  (``s ← max − softplus(max − s)``, ``s ← min + softplus(s − min)``, starting at log 0.2 and
  log 0.1) and the scale is ``softplus(s)`` (not ``exp``), as released;
* decoder: ``num_layers`` x (Dense ``hidden``, leaky ReLU 0.3); Dense ``L·C`` -> per-position
  categorical log-probabilities (discrete), or Dense ``2·D`` -> a Gaussian whose bounded log-std
  gives the scale by ``exp`` (continuous).

Keras' defaults: Glorot-uniform dense weights with zero bias, embeddings uniform in
``[-0.05, 0.05]``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

_SLOPE = 0.3  # Keras LeakyReLU


def _soft_bound(s: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    """design-baselines' soft clamp of a log-std between trainable bounds."""
    s = hi - F.softplus(hi - s)
    return lo + F.softplus(s - lo)


def _dense(n_in: int, n_out: int) -> nn.Linear:
    layer = nn.Linear(n_in, n_out)
    nn.init.xavier_uniform_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def _body(n_in: int, hidden: int, num_layers: int) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for _ in range(num_layers):
        layers += [_dense(n_in, hidden), nn.LeakyReLU(_SLOPE)]
        n_in = hidden
    return layers


class DesignVAE(nn.Module):
    """Encoder ``q(z|x)`` and decoder ``p(x|z)`` over designs of one task.

    Args:
        shape: a design's shape: ``(L,)`` for a discrete sequence, ``(D,)`` for continuous features.
        num_classes: alphabet size ``C`` of a discrete task; ``None``: continuous designs.
        latent_size: dimension of ``z`` (released: 32).
        hidden: width of the hidden layers (released: 256).
        embedding: width of the class embedding (discrete; released: 256).
        num_layers: hidden layers of the encoder and of the decoder (released: 1).
        max_std: initial upper bound of the soft-bounded std (released: 0.2).
        min_std: initial lower bound (released: 0.1).
    """

    def __init__(self, shape: tuple[int, ...], num_classes: int | None, latent_size: int = 32, hidden: int = 256,
                 embedding: int = 256, num_layers: int = 1, max_std: float = 0.2, min_std: float = 0.1) -> None:
        super().__init__()
        self.shape, self.num_classes, self.latent_size = tuple(shape), num_classes, latent_size
        size = math.prod(self.shape)
        if num_classes is not None:
            self.embed = nn.Embedding(num_classes, embedding)
            nn.init.uniform_(self.embed.weight, -0.05, 0.05)
            n_in = size * embedding
        else:
            self.embed = None
            n_in = size
        self.encoder = nn.Sequential(*_body(n_in, hidden, num_layers), _dense(hidden if num_layers else n_in,
                                                                            2 * latent_size))
        n_out = size * (num_classes if num_classes is not None else 2)
        self.decoder = nn.Sequential(*_body(latent_size, hidden, num_layers),
                                     _dense(hidden if num_layers else latent_size, n_out))
        self.enc_bounds = nn.Parameter(torch.tensor([math.log(min_std), math.log(max_std)]))
        self.dec_bounds = nn.Parameter(torch.tensor([math.log(min_std), math.log(max_std)]))

    @property
    def discrete(self) -> bool:
        return self.num_classes is not None

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``q(z|x)``: location and scale ``(n, latent)`` of designs ``x`` (``(n, L)`` integers or ``(n, D)``)."""
        h = self.embed(x.long()).flatten(1) if self.embed is not None else x.flatten(1)
        loc, s = self.encoder(h).chunk(2, dim=-1)
        return loc, F.softplus(_soft_bound(s, self.enc_bounds[0], self.enc_bounds[1]))

    def decode(self, z: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        """``p(x|z)``: ``(n, L, C)`` log-probabilities (discrete) or location and scale ``(n, D)``."""
        out = self.decoder(z)
        if self.discrete:
            return F.log_softmax(out.view(-1, *self.shape, self.num_classes), dim=-1)
        loc, s = out.view(-1, *self.shape, 2).unbind(-1)
        return loc, _soft_bound(s, self.dec_bounds[0], self.dec_bounds[1]).exp()

    def log_likelihood(self, x: Tensor, z: Tensor) -> Tensor:
        """``log p(x|z)`` ``(n,)``, summed over a design's positions."""
        dec = self.decode(z)
        if self.discrete:
            return dec.gather(-1, x.long().unsqueeze(-1)).squeeze(-1).flatten(1).sum(-1)
        loc, scale = dec
        return torch.distributions.Normal(loc, scale).log_prob(x).flatten(1).sum(-1)

    def sample(self, z: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Designs drawn from ``p(x|z)``: ``(n, L)`` integers (discrete) or ``(n, D)``."""
        dec = self.decode(z)
        if self.discrete:
            probs = dec.exp().flatten(0, -2)
            return torch.multinomial(probs, 1, generator=generator).view(z.shape[0], *self.shape)
        loc, scale = dec
        return loc + scale * torch.randn(loc.shape, generator=generator, device=loc.device, dtype=loc.dtype)
