"""MINs (lightning_mbo.search.mins): the conditional generator on tiny tasks with a known optimum,
which of its settings uses the surrogate, seeds, bad settings and quick CLI fits of every config."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lightning_mbo.search import MINs, SearchData
from lightning_mbo.search.mins import WeightedGAN
from lightning_mbo.tasks import from_logits, to_logits
from lightning_mbo.validation import SettingsError

L, C = 4, 4
#: Every sequence of length 4 over 4 classes; the true score is the number of 3s (optimum 3333).
SEQS = torch.cartesian_prod(*[torch.arange(C)] * L)
THREES = (SEQS == 3).sum(-1).float()
#: A small GAN for the tiny task: 256 rows in 16 batches, a generator step every second batch.
TINY = {"hidden": 64, "batch_size": 16, "critic_frequency": 2, "holdout": 0}


@pytest.fixture(autouse=True)
def one_thread():
    """The tiny GANs' steps are dispatch-bound: a second intra-op thread only adds synchronisation
    (tens of times slower on a machine whose cores are busy)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _encode(designs: torch.Tensor) -> torch.Tensor:
    return to_logits(designs, C).reshape(len(designs), -1)


def _decode(z: torch.Tensor) -> torch.Tensor:
    return from_logits(z.reshape(len(z), L, C - 1))


def _threes(x: torch.Tensor) -> torch.Tensor:
    """The true score of encoded designs (the score function the tests hand MINs)."""
    return (_decode(x) == 3).sum(-1).float()


def _tiny_data() -> SearchData:
    y = (THREES - THREES.mean()) / THREES.std()
    return SearchData(_encode(SEQS), y, True, num_classes=C, encode=_encode, decode=_decode)


def test_a_higher_condition_gives_designs_of_higher_true_score() -> None:
    """Budget: 40 epochs of 16 batches (hidden 64). Sampled at the data's best score the
    generator's designs hold ~3-4 threes, at its worst about half of one; a generator that ignored
    y would give both the same mix (the data mean is 1)."""
    searcher = MINs(**TINY)
    data = _tiny_data()
    cpu, noise, like = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0), torch.zeros(())
    gan = WeightedGAN(searcher, (L,), C, cpu, like)
    stats = gan.fit(*searcher.fit_data(SEQS, data.y, C, cpu, like), 40, 5.0, 1.0, noise)
    assert len(stats["mins_critic_loss"]) == 40
    with torch.no_grad():
        hi = gan.gen.sample(torch.full((1000,), float(data.y.max())), 1e-3, noise).argmax(-1)
        lo = gan.gen.sample(torch.full((1000,), float(data.y.min())), 1e-3, noise).argmax(-1)
    hi_score, lo_score = (hi == 3).sum(-1).float().mean(), (lo == 3).sum(-1).float().mean()
    assert hi_score > 2.0 and hi_score - lo_score > 1.5, (hi_score, lo_score)


def test_search_hands_back_encoded_designs_of_high_true_score() -> None:
    """Budget: 30 epochs. The 64 candidates decode to sequences with ~3.4 threes (data mean 1);
    their trajectory is their one predicted score (scored at step 0)."""
    data = _tiny_data()
    out = MINs(**TINY, gan_epochs=30).search(torch.zeros(64, 12), _threes, data, num_candidates=64, seed=0)
    assert out.x.shape == (64, 12) and out.trajectory.shape == (1, 64)
    torch.testing.assert_close(_encode(_decode(out.x)), out.x)  # valid encodings
    torch.testing.assert_close(out.trajectory[0], _threes(out.x))
    assert _threes(out.x).mean() > 2.5
    assert len(out.stats["mins_wasserstein"]) == 30


def test_the_seed_fixes_the_designs() -> None:
    data, search = _tiny_data(), MINs(**TINY, gan_epochs=3)
    out = search.search(torch.zeros(32, 12), _threes, data, num_candidates=32, seed=0)
    again = search.search(torch.zeros(32, 12), _threes, data, num_candidates=32, seed=0)
    torch.testing.assert_close(out.x, again.x, rtol=0, atol=0)
    assert out.stats == again.stats
    other = search.search(torch.zeros(32, 12), _threes, data, num_candidates=32, seed=1)
    assert not torch.equal(out.x, other.x)


@pytest.mark.slow  # two GAN searches (half a minute)
def test_only_use_oracle_lets_the_surrogate_change_the_designs() -> None:
    """The released offline run never consults the surrogate: two different score functions give
    the same designs. With ``use_oracle`` its labels enter the data, so they differ, and the
    trajectory has one row per iteration plus the final designs'."""
    data = _tiny_data()

    def run(score, **kw):
        return MINs(**TINY, gan_epochs=3, **kw).search(torch.zeros(32, 12), score, data, num_candidates=32, seed=0)

    def flipped(x: torch.Tensor) -> torch.Tensor:
        return -_threes(x)

    assert torch.equal(run(_threes).x, run(flipped).x)
    loop = {"use_oracle": True, "iterations": 2, "epochs_per_iteration": 2, "thompson_samples": 16,
            "exploration_samples": 8}
    a, b = run(_threes, **loop), run(flipped, **loop)
    assert a.trajectory.shape == (3, 32)
    assert not torch.equal(a.x, b.x)


def test_diagnostics_say_what_the_generator_was_conditioned_on() -> None:
    """Offline: sampled at the data's best, nothing labelled by the surrogate, flagged as such. With
    ``use_oracle`` a surrogate that rates its designs 5 above the data's best (normalised) lifts the
    condition above the data's best, by its labels; one that rates them below leaves it there."""
    data = _tiny_data()
    best = float(data.y.max())

    def run(score, **kw):
        return MINs(**TINY, gan_epochs=2, **kw).search(torch.zeros(32, 12), score, data, num_candidates=16, seed=0)

    offline = run(_threes).diagnostics
    assert offline["conditioned_y"] == [pytest.approx(best, rel=1e-3)] * 32
    assert offline["surrogate_labelled"] == [0] * 32
    assert offline["data_max_y"] == pytest.approx(best, rel=1e-3)
    (flag,) = offline["flags"]
    assert "never consulted" in flag
    loop = {"use_oracle": True, "iterations": 2, "epochs_per_iteration": 1, "thompson_samples": 8,
            "exploration_samples": 4}
    high = run(lambda x: torch.full((len(x),), best + 5.0), **loop).diagnostics
    assert high["conditioned_y"] == [pytest.approx(best + 5.0, rel=1e-3)] * 32
    assert high["surrogate_labelled"] == [16] * 32
    (flag,) = high["flags"]
    assert flag.startswith(f"mins: sampled at y = {best + 5.0:.3g} (a surrogate's label)")
    low = run(lambda x: torch.full((len(x),), best - 5.0), **loop).diagnostics
    assert low["conditioned_y"] == [pytest.approx(best, rel=1e-3)] * 32 and low["flags"] == []


@pytest.mark.slow  # a GAN trained on the quadratic (half a minute)
def test_continuous_designs_move_towards_the_quadratic_optimum() -> None:
    """``-||x - 0.5||²`` on 512 points uniform in [-2, 2]²: after 40 epochs (batch 32) the samples
    at the best score are far closer to the optimum than the data (mean -3.2)."""
    g = torch.Generator().manual_seed(0)
    x = torch.empty(512, 2).uniform_(-2, 2, generator=g)

    def quadratic(z: torch.Tensor) -> torch.Tensor:
        return -((z - 0.5) ** 2).sum(-1)

    y = quadratic(x)
    data = SearchData(x, (y - y.mean()) / y.std(), False)
    out = MINs(**{**TINY, "batch_size": 32}, gan_epochs=40).search(torch.zeros(64, 2), quadratic, data,
                                                                   num_candidates=64, seed=0)
    assert quadratic(out.x).mean() > -1.0, quadratic(out.x).mean()


def test_blocks_are_seeded_by_their_replicate() -> None:
    """Two blocks of 16: each its own run; the second block alone, given its candidate ids, is the
    same as the second block of the pair (results do not depend on the process count)."""
    data = _tiny_data()
    search = MINs(**TINY, gan_epochs=2)
    both = search.search(torch.zeros(32, 12), _threes, data, torch.arange(32), num_candidates=16, seed=3)
    second = search.search(torch.zeros(16, 12), _threes, data, torch.arange(16, 32), num_candidates=16, seed=3)
    assert not torch.equal(both.x[:16], both.x[16:])
    assert torch.equal(both.x[16:], second.x)
    with pytest.raises(ValueError, match="whole blocks"):
        search.search(torch.zeros(24, 12), _threes, data, None, num_candidates=16)


@pytest.mark.parametrize("bad", [
    {"gan_epochs": 0}, {"hidden": 0}, {"latent_size": 0}, {"batch_size": 0}, {"critic_frequency": 0},
    {"penalty_weight": -1.0}, {"lr": 0.0}, {"beta_1": 1.0}, {"beta_2": -0.1}, {"holdout": -1}, {"base_temp": 0.0},
    {"keep": 0.0}, {"keep": 1.5}, {"start_temp": 0.0}, {"final_temp": -1.0}, {"noise_std": -0.1},
    {"iterations": 0}, {"epochs_per_iteration": 0}, {"exploration_samples": -1}, {"exploration_rate": 0.0},
    {"thompson_samples": 0},
])
def test_bad_settings_name_the_option(bad) -> None:
    (name,) = bad
    with pytest.raises(SettingsError, match=f"--ascent.searcher.init_args.{name}"):
        MINs(**bad)


def test_a_holdout_larger_than_the_data_is_refused() -> None:
    with pytest.raises(SettingsError, match="holdout"):
        MINs(holdout=256).search(torch.zeros(8, 12), _threes, _tiny_data(), num_candidates=8)


# --- the command line ------------------------------------------------------------------------------
QUICK = str(Path(__file__).resolve().parents[2] / "configs" / "quick_mins.yaml")
#: On top of the quick overlay: 1000 TFBind8 rows (the fixture), 2 GAN epochs of 32 wide.
TINIER = ["--config", QUICK, "--trainer.max_epochs", "1", "--ascent.searcher.init_args.gan_epochs", "2",
          "--ascent.searcher.init_args.hidden", "32", "--model.init_args.hidden", "[32]"]


def test_cli_fit_tfbind8_and_ignite_leaves_the_faithful_designs_unchanged(quick_fit) -> None:
    """``mins.yaml`` alone and with ``ignite.yaml`` at one seed give the same designs: the released run
    never uses the surrogate that IGNITE regularises. ``use_oracle`` runs the loop through the
    command line, the surrogate labelling the datamodule's encoding of the generator's designs."""
    run, row = quick_fit("tfbind8/mins.yaml", *TINIER)
    run_i, row_i = quick_fit(["tfbind8/mins.yaml", "ignite.yaml"], *TINIER)
    assert row["method"] == "mins/grad_ascent" and row_i["method"] == "mins/grad_ascent+ignite"
    assert row["ascent"]["searcher"] == "mins" and row["ascent"]["use_oracle"] is False
    assert row["ascent"]["gan_epochs"] == 2 and row["ascent"]["hidden"] == 32
    assert "ignite" in row_i and "ignite" not in row
    designs = np.load(run / "designs.npy")
    assert designs.shape == (128, 8) and designs.min() >= 0 and designs.max() <= 3
    np.testing.assert_array_equal(designs, np.load(run_i / "designs.npy"))
    loop = ["--ascent.searcher.init_args.use_oracle", "true", "--ascent.searcher.init_args.iterations", "1",
            "--ascent.searcher.init_args.epochs_per_iteration", "1"]
    run_o, row_o = quick_fit(["tfbind8/mins.yaml", "ignite.yaml"], *TINIER, *loop)
    assert row_o["ascent"]["use_oracle"] is True and row_o["ascent"]["iterations"] == 1
    assert np.load(run_o / "designs.npy").shape == (128, 8)


@pytest.mark.parametrize("config", ["tfbind10/mins.yaml", ["tfbind10/mins.yaml", "ignite.yaml"]])
def test_cli_fit_tfbind10(config, quick_fit, tfbind10_every_design) -> None:
    """TFBind10 is not shipped: every 10-mer with a synthetic score stands in (MINs proposes new designs)."""
    run, row = quick_fit(config, *TINIER, "--data.data_dir", str(tfbind10_every_design))
    assert row["task"] == "TFBind10-Exact-v0" and row["method"].startswith("mins/grad_ascent")
    assert row["ascent"]["gan_epochs"] == 2  # the overlay's, over the config's 100
    assert np.load(run / "designs.npy").shape == (128, 10)
