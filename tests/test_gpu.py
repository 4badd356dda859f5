"""Training and design ascent on CUDA (run with ``python -m pytest -m gpu`` on a machine with a GPU)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lightning_mbo.cli import main
from tests.conftest import read_result

REPO = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("config", ["tfbind8/ens_mean.yaml --config ignite.yaml", "tfbind8/tri_mentoring.yaml"])
def test_fit_and_ascent_on_cuda(tmp_path, config):
    stack = [a for c in config.split(" --config ") for a in ("--config", str(REPO / "configs" / c))]
    main(["fit", *stack, "--config", str(REPO / "configs/quick.yaml"),
          "--trainer.accelerator=gpu", "--trainer.devices=1", "--trainer.max_epochs=2",
          "--ascent.steps=10", "--trainer.enable_progress_bar=false",
          f"--trainer.logger.init_args.save_dir={tmp_path}", "--trainer.logger.init_args.name=gpu",
          "--trainer.logger.init_args.version=v"])
    results = read_result(tmp_path / "gpu" / "v")
    assert results["provenance"]["device"].startswith("cuda")  # the ascent ran where the model was trained
    assert results["score_100th"] >= results["best_visible"] - 1e-6


def _matmul_precision() -> object:
    matmul = torch.backends.cuda.matmul
    return matmul.fp32_precision if hasattr(matmul, "fp32_precision") else matmul.allow_tf32


def test_tf32_outer_pass_is_close_to_float32_and_restores_the_matmul_flag():
    """``outer_precision: tf32`` turns TensorFloat-32 on for the outer pass only: the global
    flag is what it was before (also after an error inside), and the label gradient stays
    within TF32's ~1e-3 relative precision of the float32 one, but is not bit-identical."""
    from lightning_mbo.functional.outer_dot import OuterMSE
    from lightning_mbo.functional.tri_mentoring import soft_label_grad_batched
    from lightning_mbo.nn import StackedMLP

    torch.manual_seed(0)
    c, p, k, d, width = 4, 3, 10, 24, 512
    net = StackedMLP(c * p, d, (width, width)).cuda()
    params = {n: t.detach().reshape(c, p, *t.shape[1:]) for n, t in net.named_parameters()}
    x_data = torch.randn(4096, d, device="cuda")
    y_data = torch.sin(x_data).sum(-1)
    x_nb = torch.randn(c, k, d, device="cuda")
    soft = torch.rand(c, p, k * (k - 1) // 2, device="cuda")
    mask = torch.rand(c, p, k * (k - 1) // 2, device="cuda") < 0.6
    before = _matmul_precision()
    out = {prec: soft_label_grad_batched(params, x_nb, soft, mask, OuterMSE(x_data, y_data, precision=prec), beta=0.05)
           for prec in ("float32", "tf32")}
    assert _matmul_precision() == before
    err = float((out["tf32"] - out["float32"]).norm() / out["float32"].norm())
    assert 0 < err < 1e-2, err
    with pytest.raises(RuntimeError):  # an error inside the block (a shape mismatch) still restores the flag
        soft_label_grad_batched(params, x_nb, soft, mask, OuterMSE(x_data[:, :3], y_data, precision="tf32"))
    assert _matmul_precision() == before
