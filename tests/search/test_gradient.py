"""Gradient ascent over designs (search.gradient): design-baselines' plain steps, Tri-mentoring's Adam."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from lightning_mbo.search.gradient import gradient_ascent

C = 0.5


def quadratic(x: Tensor) -> Tensor:
    """``-||x - 0.5||^2`` per row; gradient ``-2 (x - 0.5)``."""
    return -((x - C) ** 2).sum(-1)


def wavy(x: Tensor) -> Tensor:
    return torch.sin(3 * x).sum(-1) - 0.1 * (x**2).sum(-1) + x[:, 0] * x[:, 1]


def test_one_sgd_step_hand_values():
    x0 = torch.tensor([[1.0, 2.0], [0.5, -0.5]], dtype=torch.float64)
    out = gradient_ascent(x0, quadratic, steps=1, lr=0.1)
    # grad = -2 (x - 0.5) = [-1, -3] and [0, 2]: x + 0.1 grad.
    torch.testing.assert_close(out.x, torch.tensor([[0.9, 1.7], [0.5, -0.3]], dtype=torch.float64), rtol=0, atol=1e-15)
    torch.testing.assert_close(out.trajectory, torch.tensor([[-2.5, -1.0], [-1.6, -0.64]], dtype=torch.float64),
                               rtol=0, atol=1e-12)


def test_sgd_equals_x_plus_lr_grad_on_any_objective():
    x0 = torch.randn(5, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = x0.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(wavy(x).sum(), x)
    out = gradient_ascent(x0, wavy, steps=1, lr=0.03, optimizer="sgd")
    torch.testing.assert_close(out.x, x0 + 0.03 * grad, rtol=0, atol=1e-14)


def test_sgd_closed_form_over_many_steps():
    x0 = torch.randn(6, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    lr, steps = 0.05, 40
    out = gradient_ascent(x0, quadratic, steps=steps, lr=lr)
    # x_T - c = (1 - 2 lr)^T (x_0 - c)
    torch.testing.assert_close(out.x, C + (1 - 2 * lr) ** steps * (x0 - C), rtol=1e-12, atol=1e-12)
    assert torch.all(out.trajectory[1:] >= out.trajectory[:-1])  # uphill every step


def test_adam_equals_torch_adam_on_minus_f():
    x0 = torch.randn(5, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    out = gradient_ascent(x0, wavy, steps=7, lr=0.05, optimizer="adam")
    x = x0.clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=0.05)
    for _ in range(7):
        opt.zero_grad()
        (-wavy(x)).sum().backward()
        opt.step()
    torch.testing.assert_close(out.x, x.detach(), rtol=0, atol=1e-12)
    # Adam is not SGD: the two rules end elsewhere.
    sgd = gradient_ascent(x0, wavy, steps=7, lr=0.05, optimizer="sgd")
    assert not torch.allclose(sgd.x, out.x)


def test_adam_first_step_moves_each_coordinate_by_lr():
    # Adam's first step is lr * sign(grad) (up to eps).
    x0 = torch.tensor([[1.0, 2.0, 0.5 + 1e-3]], dtype=torch.float64)
    out = gradient_ascent(x0, quadratic, steps=1, lr=0.1, optimizer="adam")
    torch.testing.assert_close(out.x - x0, torch.tensor([[-0.1, -0.1, -0.1]], dtype=torch.float64), rtol=0, atol=1e-6)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("steps", [0, 1, 5])
def test_trajectory_shape_and_ends(optimizer, steps):
    x0 = torch.randn(4, 3, generator=torch.Generator().manual_seed(3))
    out = gradient_ascent(x0, wavy, steps=steps, lr=0.01, optimizer=optimizer)
    assert out.trajectory.shape == (steps + 1, 4)
    assert out.x.shape == (4, 3)
    torch.testing.assert_close(out.trajectory[0], wavy(x0))
    torch.testing.assert_close(out.trajectory[-1], wavy(out.x))
    assert not out.x.requires_grad and not out.trajectory.requires_grad
    if steps == 0:
        assert torch.equal(out.x, x0)


def test_before_step_sees_steps_in_order_and_current_designs():
    x0 = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    lr, seen = 0.1, []

    def hook(x: Tensor, t: int) -> None:
        assert not x.requires_grad
        seen.append((t, x.clone()))

    gradient_ascent(x0, quadratic, steps=4, lr=lr, before_step=hook)
    assert [t for t, _ in seen] == [0, 1, 2, 3]
    for t, x in seen:
        torch.testing.assert_close(x, C + (1 - 2 * lr) ** t * (x0 - C), rtol=0, atol=1e-14)


def test_hook_runs_before_the_gradient():
    # The hook may change the objective (Tri-mentoring mentors its proxies there): the step must use it.
    scale = {"a": 1.0}
    objective = lambda x: scale["a"] * quadratic(x)

    def hook(x: Tensor, t: int) -> None:
        scale["a"] = 2.0

    out = gradient_ascent(torch.tensor([[1.0]], dtype=torch.float64), objective, steps=1, lr=0.1, before_step=hook)
    torch.testing.assert_close(out.x, torch.tensor([[1.0 - 0.1 * 2 * 2 * 0.5]], dtype=torch.float64))


def test_inputs_untouched_and_candidates_independent():
    x0 = torch.randn(3, 2, generator=torch.Generator().manual_seed(4))
    copy = x0.clone()
    both = gradient_ascent(x0, wavy, steps=3, lr=0.1)
    assert torch.equal(x0, copy)
    alone = gradient_ascent(x0[1:2], wavy, steps=3, lr=0.1)
    torch.testing.assert_close(both.x[1:2], alone.x)


def test_runs_under_no_grad_and_inference_callers():
    x0 = torch.tensor([[1.0, 2.0]])
    with torch.no_grad():
        out = gradient_ascent(x0, quadratic, steps=1, lr=0.1)
    torch.testing.assert_close(out.x, torch.tensor([[0.9, 1.7]]))


def test_bad_arguments():
    x0 = torch.zeros(1, 2)
    with pytest.raises(ValueError, match="'sgd' or 'adam'"):
        gradient_ascent(x0, quadratic, steps=1, lr=0.1, optimizer="lbfgs")
    with pytest.raises(ValueError, match="steps must be >= 0"):
        gradient_ascent(x0, quadratic, steps=-1, lr=0.1)


def test_hook_statistics_are_collected_per_step():
    x0 = torch.zeros(3, 2)
    out = gradient_ascent(x0, quadratic, steps=3, lr=0.1, before_step=lambda x, t: {"t": t, "norm": x.norm()})
    assert out.stats["t"] == [0.0, 1.0, 2.0]
    assert out.stats["norm"][0] == 0.0 and out.stats["norm"][2] > out.stats["norm"][1] > 0
    assert gradient_ascent(x0, quadratic, steps=2, lr=0.1, before_step=lambda x, t: None).stats == {}


# --- GradientAscent: the default searcher, one shape with the others --------------------------------

def _data(integers: bool = False):
    from lightning_mbo.search import SearchData  # noqa: PLC0415

    return SearchData(x=torch.zeros(3, 2), y=torch.zeros(3), discrete=False, integers=integers)


def test_gradient_ascent_searcher_fills_only_what_it_is_not_given():
    from lightning_mbo.search import GradientAscent, SearchSettings  # noqa: PLC0415

    defaults = SearchSettings(steps=200, lr=0.05, optimizer="sgd")
    assert GradientAscent().configure(defaults).settings() == {"steps": 200, "lr": 0.05, "optimizer": "sgd"}
    got = GradientAscent(steps=7, optimizer="adam").configure(defaults).settings()
    assert got == {"steps": 7, "lr": 0.05, "optimizer": "adam"}
    assert GradientAscent().result_name("ens_mean") == "ens_mean"  # the methods' own search
    with pytest.raises(Exception, match="configure"):
        GradientAscent(steps=3).settings()  # lr and optimizer still unset


def test_gradient_ascent_searcher_is_the_function_with_the_objectives_hook():
    from lightning_mbo.search import GradientAscent, SearchObjective, SearchSettings  # noqa: PLC0415

    seen = []
    objective = SearchObjective(quadratic, before_step=lambda x, t: seen.append(t) or {"t": t})
    x0 = torch.tensor([[1.0, 2.0], [0.5, -0.5]], dtype=torch.float64)
    searcher = GradientAscent().configure(SearchSettings(steps=3, lr=0.1, optimizer="adam"))
    out = searcher.search(x0, objective, _data(), torch.arange(2), 2, seed=0)
    ref = gradient_ascent(x0, quadratic, 3, 0.1, "adam")
    assert torch.equal(out.x, ref.x) and torch.equal(out.trajectory, ref.trajectory)
    assert seen == [0, 1, 2] and out.stats == {"t": [0.0, 1.0, 2.0]}
    assert GradientAscent.joint_replicates and GradientAscent.runs_step_hook


def test_gradient_ascent_searcher_refuses_class_integers():
    from lightning_mbo.search import GradientAscent, SearchSettings  # noqa: PLC0415
    from lightning_mbo.validation import SettingsError  # noqa: PLC0415

    searcher = GradientAscent().configure(SearchSettings(steps=1, lr=0.1))
    with pytest.raises(SettingsError, match="class integers"):
        searcher.search(torch.zeros(2, 2), quadratic, _data(integers=True), torch.arange(2), 2, seed=0)


@pytest.mark.parametrize("bad", [{"steps": -1}, {"lr": 0.0}, {"optimizer": "lbfgs"}])
def test_gradient_ascent_searcher_validates_its_settings(bad):
    from lightning_mbo.search import GradientAscent  # noqa: PLC0415
    from lightning_mbo.validation import SettingsError  # noqa: PLC0415

    with pytest.raises(SettingsError):
        GradientAscent(**bad)


def test_the_default_searcher_and_the_explicit_one_give_the_same_run(tmp_path):
    """``--ascent.steps 3`` is the short spelling of ``--ascent.searcher GradientAscent`` with steps 3:
    the two runs write the same designs, the same results name and the same ``ascent`` record."""
    import json  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    import numpy as np  # noqa: PLC0415

    from lightning_mbo.cli import main  # noqa: PLC0415

    repo = Path(__file__).resolve().parents[2]
    common = ["fit", "--config", str(repo / "configs/tfbind8/ens_mean.yaml"), "--trainer.max_epochs=1",
              "--model.init_args.hidden=[8]", "--model.init_args.members=2", "--data.max_samples=500",
              "--data.subsample=stride", "--ascent.num_candidates=8", "--trainer.enable_progress_bar=false",
              "--trainer.enable_model_summary=false", "--trainer.logger=false", "--seed_everything=0"]
    outs = []
    for name, extra in (("short", ["--ascent.steps=3"]),
                        ("explicit", ["--ascent.searcher=lightning_mbo.search.GradientAscent",
                                      "--ascent.searcher.init_args.steps=3"])):
        out = tmp_path / name
        main([*common, *extra, f"--trainer.default_root_dir={out}", f"--ascent.output_dir={out}"])
        outs.append(out)
    a, b = (json.loads((o / "results.json").read_text())["rows"][0] for o in outs)
    assert a["method"] == b["method"] == "ens_mean"
    assert a["ascent"] == b["ascent"] and a["ascent"]["steps"] == 3
    assert np.array_equal(np.load(outs[0] / "designs.npy"), np.load(outs[1] / "designs.npy"))
