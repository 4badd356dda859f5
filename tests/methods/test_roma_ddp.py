"""RoMA's pre-training under data parallelism: 2 CPU processes (Lightning ``strategy="ddp"``,
gloo) train exactly as 1 process does on the same global batches.

Each rank takes half of every global batch of 128. The NLL-raising weight steps use the gradient
averaged over the ranks (``Surrogate._reduce``), so both ranks perturb the weights alike, as one
process does on the whole batch; Lightning's DDP averages the outer gradient, and IGNITE's norm is
the global batch's. The final weights (and λ) must equal the 1-process run's on both ranks. No
input noise (see ``roma_ddp_worker.py``), float64, one epoch of 6 batches.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.methods.ddp_launch import launch, load_worker

WORKER = Path(__file__).with_name("roma_ddp_worker.py")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory) -> Path:
    """One launch of 2 DDP processes that train every case: ``<dir>/<case>/rank<r>.pt``."""
    out = tmp_path_factory.mktemp("roma_ddp")
    launch(WORKER, out)
    return out


@pytest.mark.slow  # two-process DDP fits (a minute); IGNITE's and the surrogate's DDP tests stay in the default suite
@pytest.mark.parametrize("case", ["plain", "ignite"])
def test_two_process_ddp_matches_one_process(ddp_runs: Path, tmp_path: Path, case: str) -> None:
    worker = load_worker(WORKER)
    worker.train(1, tmp_path, case)
    single = torch.load(tmp_path / "rank0.pt")
    ranks = [torch.load(ddp_runs / case / f"rank{r}.pt") for r in (0, 1)]
    assert single["world_size"] == 1 and all(r["world_size"] == 2 for r in ranks)
    assert single["batches"] == ranks[0]["batches"] == 6
    if case == "ignite":
        assert abs(float(single["state_dict"]["constraint.lmbda"][0]) - 1e-3) > 1e-2  # λ moved
    for r, run in enumerate(ranks):
        assert run["state_dict"].keys() == single["state_dict"].keys()
        for k, v in single["state_dict"].items():
            torch.testing.assert_close(run["state_dict"][k], v, rtol=1e-10, atol=1e-12, msg=f"{k}, rank {r}")
