"""IGNITE under data parallelism: 2 CPU processes (Lightning ``strategy="ddp"``, gloo) train
exactly as 1 process does on the same global batches (IGNITE, Dao et al. 2024; ``Surrogate._reduce``).

Each rank takes an equal contiguous half of every global batch of 128 (``drop_last=True``, so
every batch splits 64/64). Lightning's DDP averages the data-loss gradients and
``Surrogate._reduce`` averages ``∇h`` (both points of the finite difference, or ``∇h`` and the
Hessian-vector product in exact mode), so the norm, λ and the penalty are those of the global
batch: λ after every step and the final weights must equal the 1-process run's, on both ranks.

The 2-process runs come from one subprocess launch (``ignite_ddp_worker.py``; Lightning's DDP
launcher re-executes the running script for the second rank, which must not be pytest); the
1-process runs are in-process. All float64 (``precision="64-true"``), 2 epochs x 14 batches, a
2-member 2x32 surrogate.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.methods.ddp_launch import launch, load_worker

WORKER = Path(__file__).with_name("ignite_ddp_worker.py")
CASES = ["finite_difference", "exact", "uneven", "embedding"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory) -> Path:
    """One launch of 2 DDP processes that train every case: ``<dir>/<case>/rank<r>.pt``."""
    out = tmp_path_factory.mktemp("ddp")
    launch(WORKER, out, "--cases", *CASES)
    return out


def _compare(ddp_runs: Path, tmp_path: Path, case: str) -> None:
    worker = load_worker(WORKER)
    worker.train(1, tmp_path, case)
    single = torch.load(tmp_path / "rank0.pt")
    ranks = [torch.load(ddp_runs / case / f"rank{r}.pt") for r in (0, 1)]
    assert single["world_size"] == 1 and all(r["world_size"] == 2 for r in ranks)
    batches = single["batches_per_epoch"]
    assert batches == ranks[0]["batches_per_epoch"] == (14 if case != "uneven" else 15)
    assert single["lambdas"].shape == (worker.EPOCHS * batches, worker.MEMBERS)

    lam = single["lambdas"]
    # λ really moves (η_λ = 1), differently per member: the comparison below is not vacuous.
    assert (lam[-1] - worker.ignite_settings("exact").lambda_init).abs().min() > 0.05
    assert (lam[-1, 0] - lam[-1, 1]).abs() > 1e-3
    for r, run in enumerate(ranks):
        assert run["lambdas"].shape == lam.shape
        torch.testing.assert_close(run["lambdas"], lam, rtol=1e-10, atol=1e-12, msg=f"λ trajectory, rank {r}")
        assert run["state_dict"].keys() == single["state_dict"].keys()
        for k, v in single["state_dict"].items():
            if k == "best.score":  # never validated: -inf on every run
                continue
            torch.testing.assert_close(run["state_dict"][k], v, rtol=1e-10, atol=1e-12, msg=f"{k}, rank {r}")


@pytest.mark.parametrize("grad_mode", ["finite_difference", "exact"])
def test_two_process_ddp_matches_one_process(ddp_runs: Path, tmp_path: Path, grad_mode: str):
    _compare(ddp_runs, tmp_path, grad_mode)


def test_uneven_last_batch_matches_one_process(ddp_runs: Path, tmp_path: Path):
    _compare(ddp_runs, tmp_path, "uneven")


def test_embedding_members_per_lookup_norm_matches_one_process(ddp_runs: Path, tmp_path: Path):
    """The per-lookup norm sums the ranks' lookup rows (each rank's h is world x its share of the mean)."""
    _compare(ddp_runs, tmp_path, "embedding")
