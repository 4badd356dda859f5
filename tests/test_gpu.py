"""Training and design ascent on CUDA (run with ``python -m pytest -m gpu`` on a machine with a GPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lightning_mbo.cli import main

REPO = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("config", ["ens_mean_ignite.yaml", "tri_mentoring.yaml"])
def test_fit_and_ascent_on_cuda(tmp_path, config):
    main(["fit", "--config", str(REPO / "configs/tfbind8" / config), "--config", str(REPO / "configs/quick.yaml"),
          "--trainer.accelerator=gpu", "--trainer.devices=1", "--trainer.max_epochs=2",
          "--model.init_args.ascent_steps=10", "--trainer.enable_progress_bar=false",
          f"--trainer.logger.init_args.save_dir={tmp_path}", "--trainer.logger.init_args.name=gpu",
          "--trainer.logger.init_args.version=v"])
    results = json.loads((tmp_path / "gpu" / "v" / "results.json").read_text())
    assert results["device"].startswith("cuda")  # the ascent ran where the model was trained
    assert results["score_100th"] >= results["best_visible"] - 1e-6
