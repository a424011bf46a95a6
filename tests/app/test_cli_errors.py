"""The CLI's manners: one line and exit 2 for bad input, output paths checked first, files never clobbered."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from shrink.app.cli import main
from shrink.app.terminal import cli_words

HERE = Path(__file__).parent.parent  # tests/
ROOT = HERE.parent
MLP = ["--model", "cli_models:mlp", "--input", "2x4"]


@pytest.fixture
def modules(tmp_path, monkeypatch):
    """Write a throwaway module and return its import name."""
    monkeypatch.syspath_prepend(str(HERE))
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(source: str) -> str:
        name = f"user_mod_{uuid.uuid4().hex[:8]}"
        (tmp_path / f"{name}.py").write_text(source)
        return name

    return write


def _one_line(capsys, *needles) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err
    return err


def test_model_module_with_a_syntax_error(modules, capsys):
    name = modules("def broken(:\n    pass\n")
    assert main(["analyze", "--model", f"{name}:f", "--input", "2x4"]) == 2
    _one_line(capsys, "has a syntax error", "line 1")


def test_model_module_that_raises_on_import(modules, capsys):
    name = modules("raise RuntimeError('needs a GPU cluster')\n")
    assert main(["analyze", "--model", f"{name}:f", "--input", "2x4"]) == 2
    _one_line(capsys, "raised RuntimeError: needs a GPU cluster", "--debug")


def test_factory_that_raises(modules, capsys):
    name = modules("def f():\n    raise KeyError('num_layers')\n")
    assert main(["analyze", "--model", f"{name}:f", "--input", "2x4"]) == 2
    _one_line(capsys, "calling f() raised KeyError", "--debug")


def test_data_loaders_that_raise(modules, tmp_path, capsys):
    name = modules("def loaders():\n    raise FileNotFoundError('/data/train')\n")
    code = main(["compress", *MLP, "--out", str(tmp_path / "out"), "--data", f"{name}:loaders", "--epochs", "1"])
    assert code == 2
    _one_line(capsys, "calling loaders() raised FileNotFoundError")
    assert not (tmp_path / "out").exists()


def test_out_naming_an_existing_file_with_force_keeps_the_file(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))
    (tmp_path / "out").write_text("mine")
    assert main(["compress", *MLP, "--out", str(tmp_path / "out"), "--force"]) == 2
    _one_line(capsys, "is a file, not a folder")
    assert (tmp_path / "out").read_text() == "mine"


def test_epochs_without_data_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))
    assert main(["compress", *MLP, "--out", str(tmp_path / "out"), "--epochs", "3"]) == 2
    _one_line(capsys, "--epochs 3 fine-tunes on data: pass --data")
    assert not (tmp_path / "out").exists()


def _no_benchmark(*args, **kwargs):
    raise AssertionError("the benchmark ran before the output path was checked")


BENCH = ["bench", *MLP, "--runtime", "torch", "--device", "cpu", "--batch", "1", "--iters", "2", "--warmup", "0"]


def test_bench_markdown_existing_file_is_refused_before_the_benchmark(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))
    monkeypatch.setattr("shrink.deploy.bench.benchmark", _no_benchmark)
    notes = tmp_path / "notes.md"
    notes.write_text("my notes")
    assert main([*BENCH, "--markdown", str(notes)]) == 2
    _one_line(capsys, "already exists", "pass --force")
    assert notes.read_text() == "my notes"


def test_bench_markdown_under_a_file_is_refused_before_the_benchmark(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))
    monkeypatch.setattr("shrink.deploy.bench.benchmark", _no_benchmark)
    (tmp_path / "notes").write_text("x")
    assert main([*BENCH, "--markdown", str(tmp_path / "notes" / "t.md")]) == 2
    _one_line(capsys, "is a file, not a folder")


def test_bench_markdown_into_a_missing_folder_and_with_force(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))
    target = tmp_path / "missing" / "deeper" / "t.md"
    assert main([*BENCH, "--markdown", str(target)]) == 0
    assert "| model | torch | cpu | 1 |" in target.read_text()
    target.write_text("old")
    assert main([*BENCH, "--markdown", str(target), "--force"]) == 0
    assert "| model | torch | cpu | 1 |" in target.read_text()
    assert sorted(p.name for p in target.parent.iterdir()) == ["t.md"]  # no temporary file left


def test_export_out_existing_is_refused_before_the_export_in_cli_words(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))
    (tmp_path / "m.onnx").write_text("old")
    assert main(["export", *MLP, "--out", str(tmp_path / "m.onnx")]) == 2
    err = _one_line(capsys, "pass --force")
    assert "overwrite=" not in err


@pytest.mark.parametrize("library, cli", [
    ("choose another path or pass overwrite=True to replace it", "choose another path or pass --force to replace it"),
    ("keep the layer that produces its input whole with ignore=[...] (shrink.analyze",
     "keep the layer that produces its input whole with --ignore NAME (shrink.analyze"),
    ("keep it whole with ignore=['its.qualified.name'].", "keep it whole with --ignore its.qualified.name."),
    ("ignore='fc.1' names no module of the model.", "--ignore fc.1 names no module of the model."),
    ("Keep the layer producing it whole with ignore=.", "Keep the layer producing it whole with --ignore NAME."),
    ("reinit='initial' needs initial_state=, the model's", "--reinit initial needs --initial, the model's"),
    ("got nan. ratio=0.5 removes half", "got nan. --ratio 0.5 removes half"),
    ("supports reinit='trained' and scope='local'", "supports --reinit trained and --scope local"),
    ("atol=1e-4 is the default.", "--atol 1e-4 is the default."),
])
def test_cli_words(library, cli):
    assert cli_words(library) == cli


def test_a_library_error_reaches_the_cli_user_in_flags(capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))
    assert main(["analyze", *MLP, "--ignore", "net.9"]) == 2
    err = _one_line(capsys, "--ignore net.9 names no module of the model")
    assert "ignore=" not in err


NOISY = """
import logging, warnings
from torch import nn

def f():
    logging.getLogger("torch.onnx._internal.exporter._registration").warning(
        "torchvision is not installed. Skipping torchvision::nms")
    logging.getLogger("onnxscript.optimizer._constant_folding").warning("Evaluation failed: cannot reshape array")
    warnings.warn("a library's UserWarning")
    logging.getLogger("shrink.app.loading").warning("shrink's own warning")
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
"""


def test_only_shrinks_own_lines_reach_the_terminal_unless_verbose(tmp_path):
    (tmp_path / "noisy_factory.py").write_text(NOISY)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    base = [sys.executable, "-m", "shrink.app.cli"]
    args = ["analyze", "--model", "noisy_factory:f", "--input", "2x4"]
    quiet = subprocess.run([*base, *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert quiet.returncode == 0, quiet.stderr
    assert "shrink's own warning" in quiet.stderr
    for noise in ("torchvision is not installed", "Evaluation failed", "UserWarning"):
        assert noise not in quiet.stderr + quiet.stdout
    loud = subprocess.run([*base, "-v", *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert loud.returncode == 0, loud.stderr
    assert "torchvision is not installed" in loud.stderr and "Evaluation failed" in loud.stderr


def _no_demo(*args, **kwargs):
    raise AssertionError("the demo started before its --out was checked")


def test_demo_refuses_a_folder_it_did_not_write_before_training(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("shrink.app.demo.run_demo", _no_demo)
    mine = tmp_path / "thesis"
    mine.mkdir()
    (mine / "chapter1.tex").write_text("mine")
    assert main(["demo", "--out", str(mine)]) == 2
    _one_line(capsys, "already exists", "--force")
    assert (mine / "chapter1.tex").read_text() == "mine"


def test_demo_may_replace_its_own_folder(tmp_path):
    from shrink.app.demo import is_demo_folder

    out = tmp_path / "shrink-demo"
    out.mkdir()
    assert not is_demo_folder(out)
    (out / "plan.json").write_text('{"model_factory": "shrink.zoo:DigitsNet"}')
    assert is_demo_folder(out)


@pytest.mark.parametrize("argv, needle", [
    (["analyze", "--model", "cli_models:mlp", "--input", "100000x100000x4"], "more than 100,000,000"),
    (["compress", *MLP, "--out", "never", "--lr", "nan", "--epochs", "1", "--data", "cli_models:loaders"],
     "--lr must be a finite number > 0"),
    (["compress", *MLP, "--out", "never", "--steps", "0"], "--steps >= 1"),
])
def test_hostile_numbers(argv, needle, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))
    assert main(argv) == 2
    _one_line(capsys, needle)


def test_ctrl_c_is_one_line_and_leaves_no_output(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("shrink.deploy.store.write_into", interrupted)
    monkeypatch.setattr("shrink.app.job.write_into", interrupted)
    assert main(["compress", *MLP, "--out", str(tmp_path / "out"), "--no-onnx"]) == 130
    _one_line(capsys, "interrupted")
    assert list(tmp_path.iterdir()) == []


def test_empty_input_dimension(capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))
    assert main(["analyze", "--model", "cli_models:mlp", "--input", "0x4"]) == 2
    _one_line(capsys, "has an empty dimension")
