"""MINs' conditional generator and critic (lightning_mbo.generative.gan): the released layout
against a forward written out here, shapes, the relaxation and Keras' initialisation."""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from lightning_mbo.generative.gan import ConditionalCritic, ConditionalGenerator, ConditionedMLP


def _reference(body: ConditionedMLP, a: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The released ``Discriminator.__call__`` / ``DiscreteGenerator.sample`` body: the score's
    linear embedding concatenated to the input of all four dense layers, LayerNorm (ε 1e-3, Keras)
    and leaky ReLU 0.2 after the first three."""
    e = y[:, None] @ body.embed.weight.T + body.embed.bias
    for j in range(3):
        dense, norm = body.dense[j], body.norms[j]
        h = torch.cat([a, e], -1) @ dense.weight.T + dense.bias
        a = F.leaky_relu(F.layer_norm(h, (h.shape[-1],), norm.weight, norm.bias, eps=1e-3), 0.2)
    last = body.dense[3]
    return torch.cat([a, e], -1) @ last.weight.T + last.bias


def test_layout_matches_the_released_forward() -> None:
    torch.manual_seed(0)
    body = ConditionedMLP(n_in=5, n_out=3, hidden=8)
    for p in body.parameters():  # move LayerNorm's affine off its identity start
        p.data.add_(0.1 * torch.randn_like(p))
    a, y = torch.randn(6, 5), torch.randn(6)
    torch.testing.assert_close(body(a, y), _reference(body, a, y))
    assert [layer.in_features for layer in body.dense] == [5 + 8, 16, 16, 16]


def test_shapes_relaxation_and_conditioning() -> None:
    init = torch.Generator().manual_seed(0)
    gen = ConditionalGenerator((8,), num_classes=4, latent_size=32, hidden=16, generator=init)
    y = torch.linspace(-1, 1, 10)
    g = torch.Generator().manual_seed(1)
    x = gen.sample(y, temp=1.0, generator=g)
    assert x.shape == (10, 8, 4) and torch.all(x >= 0)
    torch.testing.assert_close(x.sum(-1), torch.ones(10, 8))
    cold = gen.sample(y, temp=1e-3, generator=g)
    assert (cold.max(-1).values > 0.99).all()  # the released final samples are one-hot
    critic = ConditionalCritic(32, hidden=16, generator=torch.Generator().manual_seed(2))
    d = critic(x, y)
    assert d.shape == (10,)
    assert not torch.allclose(d, critic(x, y + 1.0))  # the critic reads the score
    z = torch.randn(10, 32)
    assert not torch.allclose(gen(z, y), gen(z, -y))  # and so does the generator
    cont = ConditionalGenerator((3,), None, latent_size=4, hidden=16)
    assert cont.sample(y, generator=g).shape == (10, 3)


def test_keras_initialisation_is_seeded() -> None:
    """Glorot-uniform weights within ±sqrt(6 / (fan_in + fan_out)), zero biases; the same
    generator gives the same weights."""
    a = ConditionalCritic(32, hidden=64, generator=torch.Generator().manual_seed(5))
    b = ConditionalCritic(32, hidden=64, generator=torch.Generator().manual_seed(5))
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q), name
    for layer in [a.body.embed, *a.body.dense]:
        bound = math.sqrt(6 / (layer.in_features + layer.out_features))
        assert layer.weight.abs().max() <= bound and layer.weight.abs().max() > 0.9 * bound
        assert torch.count_nonzero(layer.bias) == 0
