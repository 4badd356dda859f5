"""Seeds as a batch dimension: replicate k of a stacked run of seeds s, s+1, ... builds what a plain
run of seed s + k builds (initialisation, split, bootstrap draw, data order, search), on the shipped
TFBind8 at tiny sizes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lightning_mbo.cli import main
from lightning_mbo.data import MBODataModule
from lightning_mbo.methods import Surrogate
from lightning_mbo.validation import SettingsError

REPO = Path(__file__).resolve().parents[2]

TINY = [
    "--trainer.max_epochs=2", "--model.init_args.hidden=[16]",
    "--data.max_samples=600", "--data.subsample=stride", "--data.batch_size=64", "--data.val_size=50",
    "--data.bootstrap=true", "--ascent.num_candidates=16", "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false", "--trainer.accelerator=cpu",
]

# Tolerance of the stacked run's predictions against the plain run's: the same numbers go through a
# batched matmul over 2x as many members, which a kernel may block differently (float32 rounding);
# the decoded designs and oracle scores must match exactly.
ATOL = 1e-5


def _fit(tmp_path: Path, name: str, config: str, seed: int, replicates: int, extra: list[str]) -> Path:
    main(["fit", "--config", str(REPO / "configs/tfbind8" / config), *TINY, *extra,
          f"--seed_everything={seed}", f"--model.init_args.replicates={replicates}", "--trainer.logger=false",
          f"--trainer.default_root_dir={tmp_path / name}",
          f"--ascent.output_dir={tmp_path / name}"])
    return tmp_path / name


@pytest.mark.parametrize(("config", "extra"), [
    ("ens_mean.yaml", ["--model.init_args.members=2"]),  # design-baselines' 200 steps
    ("cma_es.yaml", ["--model.init_args.members=2", "--ascent.searcher.init_args.iterations=4"]),
    ("coms.yaml", ["--model.init_args.members=2", "--trainer.max_epochs=1"]),  # COMs' 50 steps
    # RoMA: one network per replicate, its training noise from each replicate's seed; a step size that moves
    ("roma.yaml", ["--ascent.steps=10", "--ascent.lr=1.0", "--model.init_args.adapt_steps=5",
                   "--model.init_args.perturb_steps=2"]),
    # ICT and Tri-mentoring: three proxies per replicate; each replicate's fine-tuning or mentoring noise from its seed
    ("ict.yaml", ["--trainer.max_epochs=1", "--model.init_args.finetune_steps=10", "--model.init_args.neighbours=16"]),
    ("tri_mentoring.yaml", ["--trainer.max_epochs=1", "--ascent.steps=25"]),
])
def test_replicate_k_is_the_plain_run_of_seed_s_plus_k(tmp_path: Path, config: str, extra: list[str]) -> None:
    stacked = _fit(tmp_path, "stacked", config, 3, 2, extra)
    rows = json.loads((stacked / "results.json").read_text())["rows"]
    assert [r["seed"] for r in rows] == [3, 4]
    designs = np.load(stacked / "designs.npy")
    # Replicate 1 is the one that randomness drawn from the run's seed instead of its own gets wrong (replicate 0
    # shares the run's seed): every method checks it, the base case checks replicate 0 too (a plain fit each).
    for k, seed in enumerate((3, 4)):
        if k == 0 and config != "ens_mean.yaml":
            continue
        plain = _fit(tmp_path, f"plain{seed}", config, seed, 1, extra)
        np.testing.assert_array_equal(designs[k], np.load(plain / "designs.npy"))
        row = json.loads((plain / "results.json").read_text())["rows"][0]
        assert row["seed"] == seed
        assert rows[k]["score_100th"] == row["score_100th"]
        for key in ("mean_predicted_start", "mean_predicted_final"):  # the trained weights' predictions
            assert rows[k][key] == pytest.approx(row[key], abs=ATOL, rel=0)
    assert not np.array_equal(designs[0], designs[1])


def test_replicate_k_starts_from_the_weights_of_seed_s_plus_k() -> None:
    stacked, plain = Surrogate(8, members=2, hidden=(16, 16), replicates=3), Surrogate(8, members=2, hidden=(16, 16))
    stacked.reseed(stacked.replicate_seeds(7))
    plain.reseed([9])
    for (name, a), b in zip(stacked.net.named_parameters(), plain.net.parameters(), strict=True):
        assert torch.equal(a[4:6], b), name
    assert not torch.equal(stacked.net.layers[0].weight[0], stacked.net.layers[0].weight[2])


def test_each_seeds_block_draws_its_own_split_bootstrap_and_order() -> None:
    kwargs = {"max_samples": 300, "subsample": "stride", "val_size": 20, "batch_size": 32, "bootstrap": True}
    stacked, plain = MBODataModule(seed=5, **kwargs), MBODataModule(seed=6, **kwargs)
    stacked.connect(members=4, seeds=[5, 6])
    plain.connect(members=2, seeds=[6])
    stacked.setup(), plain.setup()
    assert torch.equal(stacked.train_rows[2:], plain.train_rows)
    assert torch.equal(stacked.val_rows[2:], plain.val_rows)
    assert not torch.equal(stacked.train_rows[0], stacked.train_rows[2])  # seed 5's split is not seed 6's
    assert torch.equal(stacked.bootstrap_weights()[2:], plain.bootstrap_weights())
    a, b = next(iter(stacked.train_dataloader())), next(iter(plain.train_dataloader()))
    assert a[2] == b[2]  # the global batch's row count
    for x, y in zip(a[:2] + a[3:4], b[:2] + b[3:4], strict=True):  # features, scores, bootstrap weights
        assert torch.equal(x[2:], y)


def test_seeds_cannot_stack_over_a_seeded_subsample() -> None:
    dm = MBODataModule(max_samples=300, subsample="random", seed=0)
    with pytest.raises(SettingsError, match="separate jobs"):
        dm.connect(members=2, seeds=[0, 1])


@pytest.mark.parametrize("head", ["gaussian", "mse"])
@pytest.mark.parametrize("embedding", [None, [4, 8]])
def test_own_members_equal_every_network_on_every_design_then_gathered(head, embedding) -> None:
    """``Surrogate.own_members`` runs each network on its own replicate's designs only; it must give what
    running every network on every design and gathering each design's replicate gives, for designs of
    one replicate, equal blocks of every replicate in order, and any other order."""
    import torch  # noqa: PLC0415

    from lightning_mbo.methods import Surrogate  # noqa: PLC0415

    torch.manual_seed(0)
    reps, k, n = 3, 2, 12
    model = Surrogate(5, members=k, hidden=[7], head=head, replicates=reps, embedding=embedding)
    x = torch.randint(0, 4, (n, 5)).float() if embedding else torch.randn(n, 5)

    def reference(replicate):
        mean, logstd = model(x)  # (R K, N)
        index = (replicate * k).view(1, -1) + torch.arange(k).view(-1, 1)
        return mean.gather(0, index), None if logstd is None else logstd.gather(0, index)

    cases = [torch.full((n,), 1), torch.arange(reps).repeat_interleave(n // reps), torch.randint(0, reps, (n,))]
    for replicate in cases:
        got, want = model.own_members(x, replicate), reference(replicate)
        assert torch.allclose(got[0], want[0], atol=1e-6, rtol=1e-5)
        assert (got[1] is None) == (want[1] is None)
        if got[1] is not None:
            assert torch.allclose(got[1], want[1], atol=1e-6, rtol=1e-5)
        aggregated = model.predict_designs(x, replicate)
        assert torch.allclose(aggregated, want[0].mean(0), atol=1e-6, rtol=1e-5)
