"""docs/extending.md's worked example, run as the page states it: its three files are taken from the
page's code blocks, the method module is imported under the name its config gives
(``lightning_mbo.methods.shrinkage``), and a quick fit, a checkpoint reload and the example's own test
run on them. A method that subclasses ``Surrogate`` declares only its own arguments; the base's
settings reach it through ``**kwargs`` (members, hidden, lr, lr_schedule, ignite, replicates), and a
setting it fixes in its ``super().__init__`` call is neither offered nor saved."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest
import torch
import yaml

from lightning_mbo.cli import main
from lightning_mbo.methods.settings import accepted_settings
from lightning_mbo.methods.surrogate import Surrogate
from lightning_mbo.validation import SettingsError

REPO_ROOT = Path(__file__).resolve().parents[2]
PAGE = REPO_ROOT / "docs" / "extending.md"
MODULE = "lightning_mbo.methods.shrinkage"


def page_file(path: str) -> str:
    """The code block that follows the line naming ``path`` on the page."""
    match = re.search(rf"`{re.escape(path)}`:\n\n```\w+\n(.*?)```", PAGE.read_text(), re.S)
    assert match, f"docs/extending.md has no code block for {path}"
    return match.group(1)


@pytest.fixture
def shrinkage(tmp_path, monkeypatch):
    """The page's method module, importable as its config names it (and gone after the test)."""
    source = tmp_path / "shrinkage.py"
    source.write_text(page_file("lightning_mbo/methods/shrinkage.py"))
    spec = importlib.util.spec_from_file_location(MODULE, source)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, MODULE, module)
    spec.loader.exec_module(module)
    import lightning_mbo.methods as methods  # noqa: PLC0415

    monkeypatch.setattr(methods, "shrinkage", module, raising=False)
    return module


def test_the_page_promises_one_module_one_config_one_test():
    text = PAGE.read_text()
    assert "touches one new module, one config and one test file" in text
    for path in ("lightning_mbo/methods/shrinkage.py", "configs/tfbind8/shrinkage.yaml",
                 "tests/methods/test_shrinkage.py"):
        page_file(path)


def test_base_settings_reach_the_method_without_redeclaration(shrinkage):
    cls = shrinkage.Shrinkage
    own = set(cls.__init__.__code__.co_varnames[1:cls.__init__.__code__.co_argcount])
    assert own == {"input_dim", "penalty"}
    offered = accepted_settings(cls)
    assert {"members", "hidden", "lr", "lr_schedule", "weight_decay", "ignite", "replicates", "penalty"} <= offered
    assert "head" not in offered  # fixed by the method's super().__init__ call
    model = cls(8, penalty=0.5, members=3, hidden=[16], lr=0.01, lr_schedule="cosine")
    assert model.num_members == 3 and model.head == "mse"
    assert model.hparams.members == 3 and model.hparams.lr == 0.01 and model.hparams.penalty == 0.5
    assert "head" not in model.hparams
    with pytest.raises(SettingsError, match="lr"):
        cls(8, lr=0.0)  # the base's validation applies to settings given through **kwargs


def test_the_example_fits_searches_and_reloads(shrinkage, tmp_path):
    config = tmp_path / "shrinkage.yaml"
    config.write_text(page_file("configs/tfbind8/shrinkage.yaml"))
    declared = yaml.safe_load(config.read_text())["model"]["init_args"]
    out = tmp_path / "run"
    cli = main(["fit", "--config", str(config), "--trainer.max_epochs=2", "--model.init_args.hidden=[16]",
                "--data.max_samples=600", "--data.subsample=stride", "--data.batch_size=64", "--data.val_size=50",
                "--ascent.steps=3", "--ascent.num_candidates=16", "--trainer.enable_progress_bar=false",
                "--trainer.enable_model_summary=false", "--trainer.accelerator=cpu", "--seed_everything=0",
                f"--trainer.default_root_dir={out}", f"--ascent.output_dir={out}", "--trainer.logger=false"])
    model = cli.model
    assert type(model).__name__ == "Shrinkage"
    assert model.hparams.members == declared["members"] and model.hparams.lr == declared["lr"]
    assert model.hparams.penalty == declared["penalty"]
    assert model.optimizers().optimizer.param_groups[0]["lr"] == declared["lr"]
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [row["method"] for row in rows] == ["shrinkage"]
    ckpt = next(out.rglob("last.ckpt"))
    again = shrinkage.Shrinkage.load_from_checkpoint(ckpt)
    assert again.hparams.members == declared["members"] and again.hparams.penalty == declared["penalty"]
    x = torch.rand(4, model.hparams.input_dim)
    assert torch.equal(again(x)[0], model.cpu()(x)[0])


def test_a_setting_the_method_fixes_is_refused_on_the_command_line(shrinkage, tmp_path, capsys):
    config = tmp_path / "shrinkage.yaml"
    config.write_text(page_file("configs/tfbind8/shrinkage.yaml"))
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(config), "--model.init_args.head=gaussian", "--print_config"])
    assert "head" in capsys.readouterr().err


def test_the_examples_own_test_passes(shrinkage):
    namespace: dict = {}
    exec(compile(page_file("tests/methods/test_shrinkage.py"), "test_shrinkage.py", "exec"), namespace)
    tests = [f for name, f in namespace.items() if name.startswith("test_")]
    assert tests
    for test in tests:
        test()


def test_every_shipped_method_takes_the_base_settings_it_does_not_fix():
    """COMs, RoMA, ICT and Tri-mentoring offer the base's settings without declaring them."""
    from lightning_mbo.methods import ICT, COMs, RoMA, TriMentoring  # noqa: PLC0415

    base = set(accepted_settings(Surrogate))
    fixed = {COMs: {"head", "weight_decay", "lr_schedule", "aggregate", "select_best", "embedding"},
             RoMA: {"members", "head", "weight_decay", "lr_schedule", "aggregate", "select_best", "embedding"},
             ICT: {"head", "aggregate", "embedding"},
             TriMentoring: {"head", "aggregate", "embedding"}}
    for cls, fixes in fixed.items():
        assert base - accepted_settings(cls) == fixes, cls.__name__
