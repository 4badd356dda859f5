"""Entry point of the RoMA DDP test (tests/methods/test_roma_ddp.py).

Pre-trains a small RoMA model on TFBind8 with Lightning on CPU, in one process or with
``strategy="ddp"`` (gloo) on several, and saves every rank's final weights (and IGNITE's λ).
Lightning's DDP launcher re-executes this script once per extra rank, so it is a script::

    python tests/methods/roma_ddp_worker.py --devices 2 --out DIR --cases plain ignite

writes ``DIR/<case>/rank<r>.pt`` for each case, one fit after the other in the same process group.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch

from lightning_mbo.cli import MBOTrainer
from lightning_mbo.data import MBODataModule
from lightning_mbo.methods import Ignite
from lightning_mbo.methods.roma import RoMA

#: Global batch 128 (64 per rank with 2 processes); 800 training rows, drop_last: 6 full batches.
BATCH_SIZE = 128
MAX_SAMPLES = 1000
SEED = 0
#: No input noise (each rank draws its own for its rows, one process for all of them: they could
#: not agree), and a perturbation 40x the released one, so that its global-batch gradient shows.
SETTINGS = {"hidden": (16, 16), "noise_std": 0.0, "inner_lr": 0.2}
CASES = {"plain": None, "ignite": Ignite(grad_mode="exact", lambda_lr=1.0)}


def train(devices: int, out: Path, case: str) -> None:
    """Train one case and write ``out/rank<r>.pt`` (``state_dict``, ``world_size``, ``batches``)."""
    dm = MBODataModule(max_samples=MAX_SAMPLES, batch_size=BATCH_SIZE, seed=SEED, drop_last=True)
    pl.seed_everything(SEED, verbose=False)
    model = RoMA(dm.input_dim, ignite=CASES[case], **SETTINGS)
    kwargs = {"strategy": "ddp"} if devices > 1 else {}
    trainer = MBOTrainer(accelerator="cpu", devices=devices, max_epochs=1, precision="64-true", logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         limit_val_batches=0, num_sanity_val_steps=0, **kwargs)
    trainer.fit(model, datamodule=dm)
    out.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
                "world_size": trainer.world_size, "batches": trainer.num_training_batches},
               out / f"rank{trainer.global_rank}.pt")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--out", required=True)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)  # 2 ranks on a 2-core machine: no intra-op threads
    for case in args.cases:
        train(args.devices, Path(args.out) / case, case)


if __name__ == "__main__":
    main()
