"""IGNITE on embedding members in a real training run: λ's step uses the released per-lookup norm.

Dao et al., NeurIPS 2024: ``λ <- λ + η_λ (ρ ||∇h|| − ε)``; with ``embedding_norm: per_lookup`` the
norm takes the gradients of the looked-up vectors (TensorFlow's ``IndexedSlices`` rows) in place
of the embedding table's dense gradient.
"""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from torch import Tensor

from lightning_mbo.cli import MBOTrainer
from lightning_mbo.methods import Ignite, Surrogate
from tests.conftest import shipped_tfbind8

pytestmark = pytest.mark.usefixtures("one_thread")


class FirstStep(pl.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.x = batch[0].detach().clone()
        self.params = {k: v.detach().clone() for k, v in pl_module.named_parameters()}


def _reference_norms(model: Surrogate, params: dict[str, Tensor], x: Tensor, per_lookup: bool) -> Tensor:
    """``||∇h_m||`` with the lookups as separate leaves (independent of the capture hook)."""
    table = params["net.embed.weight"]  # (M, C, E)
    members = table.shape[0]
    ids = x.long().reshape(members, -1)  # (M, B * L)
    rows = torch.gather(table, 1, ids.unsqueeze(-1).expand(-1, -1, table.shape[2])).requires_grad_()
    layers = {k: v.clone().requires_grad_() for k, v in params.items() if k.startswith("net.layers")}
    out = rows.reshape(members, x.shape[1], -1)
    n = len(layers) // 2
    for i in range(n):
        out = torch.baddbmm(layers[f"net.layers.{i}.bias"], out, layers[f"net.layers.{i}.weight"])
        out = torch.nn.functional.leaky_relu(out, 0.3) if i < n - 1 else out
    h = out[..., 0].mean(-1).sum()
    g_rows, *g_layers = torch.autograd.grad(h, [rows, *layers.values()])
    sq = sum(g.reshape(members, -1).pow(2).sum(1) for g in g_layers)
    if per_lookup:
        return (sq + g_rows.reshape(members, -1).pow(2).sum(1)).sqrt()
    dense = torch.zeros_like(table).scatter_add_(1, ids.unsqueeze(-1).expand_as(g_rows), g_rows)
    return (sq + dense.reshape(members, -1).pow(2).sum(1)).sqrt()


@pytest.mark.parametrize("grad_mode", ["finite_difference", "exact"])
@pytest.mark.parametrize("norm", ["per_lookup", "dense"])
def test_lambda_steps_with_the_chosen_embedding_norm(grad_mode: str, norm: str) -> None:
    dm = shipped_tfbind8(300, encoding="integers", normalize_x=False)
    pl.seed_everything(0, verbose=False)
    settings = Ignite(grad_mode=grad_mode, embedding_norm=norm, lambda_lr=0.5)
    model = Surrogate(dm.input_dim, members=2, hidden=(16,), embedding=[4, 8], ignite=settings)
    record = FirstStep()
    MBOTrainer(max_epochs=1, max_steps=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
               enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
               callbacks=[record]).fit(model, datamodule=dm)
    want = _reference_norms(model, record.params, record.x, norm == "per_lookup")
    other = _reference_norms(model, record.params, record.x, norm != "per_lookup")
    assert (want - other).abs().min() > 1e-4  # the two norms differ on this batch
    torch.testing.assert_close(model.constraint.norm_ema, want)
    step = settings.lambda_lr * (settings.rho * want - settings.eps)
    torch.testing.assert_close(model.constraint.lmbda, settings.lambda_init + step)
    assert model.method_summary()["ignite"]["norm"] == norm
