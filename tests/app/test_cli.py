"""The CLI end to end: in-process through main([...]) and one real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import shrink
from shrink.app.cli import main

HERE = Path(__file__).parent.parent  # tests/, where cli_models.py lives


@pytest.fixture
def ckpt(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))
    from cli_models import mlp

    model = mlp()
    path = tmp_path / "ckpt.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)  # DataParallel-style
    return model, path


def test_compress_writes_a_folder_that_loads(tmp_path, ckpt):
    model, path = ckpt
    out = tmp_path / "out"
    code = main(["compress", "--model", "cli_models:mlp", "--weights", str(path), "--input", "2x4",
                 "--ratio", "0.5", "--out", str(out), "--data", "cli_models:loaders", "--epochs", "1"])
    assert code == 0
    assert {"model.safetensors", "plan.json", "model.onnx", "report.md", "report.json", "widths.png"} <= {
        p.name for p in out.iterdir()}
    from cli_models import mlp

    loaded = shrink.load(out, mlp())
    report = json.loads((out / "report.json").read_text())
    markdown = (out / "report.md").read_text()
    assert "## Verification" in markdown and "checked exactly" in markdown
    assert report["params"]["after"] == shrink.count(loaded, torch.randn(1, 4)).params
    assert [row["stage"] for row in report["quality"]["stages"]] == ["dense", "after cut", "after fine-tuning (distilled)"]
    import onnxruntime as ort

    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    x = torch.randn(5, 4)
    onnx_out = session.run(None, {"x": x.numpy()})[0]
    with torch.no_grad():
        assert torch.allclose(torch.from_numpy(onnx_out), loaded(x), atol=1e-5)


def test_existing_out_is_refused_and_untouched(tmp_path, ckpt, capsys):
    _, path = ckpt
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code = main(["compress", "--model", "cli_models:mlp", "--weights", str(path), "--input", "2x4", "--out", str(out)])
    assert code == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--force" in err
    assert (out / "keep.txt").read_text() == "mine" and len(list(out.iterdir())) == 1
    assert main(["compress", "--model", "cli_models:mlp", "--weights", str(path), "--input", "2x4",
                 "--out", str(out), "--force", "--no-onnx"]) == 0
    assert not (out / "keep.txt").exists() and (out / "plan.json").exists()


@pytest.mark.parametrize("argv, message", [
    (["--weights", "missing.pt"], "not found"),
    (["--input", "2xfour"], "is not a shape like"),
    (["--model", "no_such_pkg.models:build"], "cannot import 'no_such_pkg.models'"),
    (["--model", "cli_models:wider_mlp"], "missing keys"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, ckpt, capsys, argv, message):
    _, path = ckpt
    base = {"--model": "cli_models:mlp", "--weights": str(path), "--input": "2x4"}
    for flag, value in zip(argv[::2], argv[1::2]):
        base[flag] = value
    args = ["compress", *[t for kv in base.items() for t in kv], "--out", str(tmp_path / "o")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and err.startswith("shrink: error:")
    assert not (tmp_path / "o").exists()


def test_wrong_architecture_names_mismatched_keys(tmp_path, ckpt, capsys):
    _, path = ckpt
    assert main(["analyze", "--model", "cli_models:wider_mlp", "--weights", str(path), "--input", "1x4"]) == 2
    assert "other shapes ['net.0.bias', 'net.0.weight', 'net.2.weight']" in capsys.readouterr().err


def test_analyze_and_json(ckpt, capsys):
    _, path = ckpt
    assert main(["analyze", "--model", "cli_models:mlp", "--input", "1x4", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert sorted(g["root"] for g in doc["groups"] if g["prunable"]) == ["net.0", "net.2"]


def test_export_and_bench_from_folder(tmp_path, ckpt, capsys):
    _, path = ckpt
    out = tmp_path / "out"
    assert main(["compress", "--model", "cli_models:mlp", "--weights", str(path), "--input", "2x4",
                 "--out", str(out), "--no-onnx"]) == 0
    assert main(["export", str(out), "--model", "cli_models:mlp", "--out", str(tmp_path / "again.onnx")]) == 0
    assert (tmp_path / "again.onnx").exists()
    assert main(["bench", str(out), str(tmp_path / "again.onnx"), "--model", "cli_models:mlp", "--device", "cpu", "--batch", "2",
                 "--iters", "3", "--warmup", "1", "--markdown", str(tmp_path / "lat.md")]) == 0
    table = (tmp_path / "lat.md").read_text()
    assert "| out | torch | cpu | 2 |" in table and "| again | onnxruntime | cpu | 2 |" in table


def test_usage_error_exit_code():
    assert main(["compress"]) == 2
    assert main(["--help"]) == 0


def test_real_subprocess(tmp_path, ckpt):
    model, path = ckpt
    env = {**__import__("os").environ, "PYTHONPATH": str(HERE)}
    out = tmp_path / "out"
    # The console script, run from the folder holding the factory's module, with no PYTHONPATH:
    # what a user types. (Console scripts do not put the working folder on sys.path by themselves.)
    script = Path(sys.executable).with_name("shrink")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "shrink.app.cli"]
    plain_env = {k: v for k, v in env.items() if k != "PYTHONPATH"}
    proc = subprocess.run([*command, "compress", "--model", "cli_models:mlp", "--weights", str(path),
                           "--input", "2x4", "--ratio", "0.5", "--out", str(out)],
                          capture_output=True, text=True, env=plain_env, cwd=HERE, timeout=300)
    assert proc.returncode == 0, proc.stderr
    from cli_models import mlp

    loaded = shrink.load(out, mlp()).eval()
    expected = shrink.compress(model, torch.randn(2, 4), ratio=0.5).model.eval()
    x = torch.randn(7, 4)
    with torch.no_grad():
        assert torch.equal(loaded(x), expected(x))
    bad = subprocess.run([sys.executable, "-m", "shrink.app.cli", "analyze", "--model", "cli_models:mlp",
                          "--input", "1x5"], capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and "cannot run on the example inputs" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_demo_pipeline_quick(tmp_path):
    from shrink.app.demo import run_demo

    doc = run_demo(str(tmp_path / "demo"), quick=True, progress=False)
    assert doc["params"]["after"] < doc["params"]["before"]
    assert doc["quality"]["stages"][0]["stage"] == "dense" and doc["quality"]["stages"][0]["value"] > 0.5
    assert (tmp_path / "demo" / "model.onnx").exists() and (tmp_path / "demo" / "latency.png").exists()
    assert doc["export"]["max_rel_diff"] <= 1e-4


def test_iterative_compress_from_cli(tmp_path, ckpt):
    _, path = ckpt
    out = tmp_path / "out"
    assert main(["compress", "--model", "cli_models:mlp", "--weights", str(path), "--input", "2x4", "--ratio", "0.5",
                 "--steps", "2", "--data", "cli_models:loaders", "--epochs", "1", "--out", str(out), "--no-onnx"]) == 0
    doc = json.loads((out / "report.json").read_text())
    assert [e["step"] for e in doc["schedule"]] == [1, 2] and {h["step"] for h in doc["history"]} == {1, 2}
    assert "## Iterative schedule" in (out / "report.md").read_text()
    from cli_models import mlp

    loaded = shrink.load(out, mlp())
    assert loaded.net[0].out_features == 16 and loaded.net[2].out_features == 8


# --- a folder's files are data only -------------------------------------------------------------

@pytest.mark.parametrize("command", ["export", "bench"])
def test_a_folder_naming_a_factory_never_imports_it(tmp_path, ckpt, capsys, monkeypatch, command):
    _, path = ckpt
    out = tmp_path / "out"
    assert main(["compress", "--model", "cli_models:mlp", "--weights", str(path), "--input", "2x4",
                 "--out", str(out), "--no-onnx"]) == 0
    # A hostile plan.json names code that would leave a mark if it were ever imported.
    (tmp_path / "evil_factory.py").write_text(
        f"open({str(tmp_path / 'pwned')!r}, 'w').write('ran')\ndef build():\n    raise SystemExit(0)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    plan = json.loads((out / "plan.json").read_text())
    plan["model_factory"] = "evil_factory:build"
    (out / "plan.json").write_text(json.dumps(plan))
    extra = ["--out", str(tmp_path / "x.onnx")] if command == "export" else ["--iters", "1", "--warmup", "0"]
    capsys.readouterr()
    assert main([command, str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert "--model" in err and "never imports" in err and len(err.strip().splitlines()) == 1
    # Naming another factory than the folder records is refused too, before anything is imported.
    assert main([command, str(out), "--model", "cli_models:wider_mlp", *extra]) == 2
    assert "evil_factory:build" in capsys.readouterr().err
    assert not (tmp_path / "pwned").exists()
    assert "evil_factory" not in sys.modules


class _NotATensor:
    pass


def test_a_pickle_with_objects_is_refused_in_one_safe_line(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))
    bad = tmp_path / "objects.pt"
    torch.save({"w": torch.zeros(2), "obj": _NotATensor()}, bad)
    code = main(["analyze", "--model", "cli_models:mlp", "--weights", str(bad), "--input", "2x4"])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "\x1b[" not in err
    assert "weights_only=False" not in err and "add_safe_globals" not in err
    assert "not loaded" in err and "model.state_dict()" in err


@pytest.mark.parametrize("name, data", [("random.pt", bytes(range(256)) * 8), ("random.safetensors", b"\x07" * 300),
                                        ("truncated.safetensors", None)])
def test_unreadable_weights_get_one_line(tmp_path, capsys, monkeypatch, name, data):
    monkeypatch.syspath_prepend(str(HERE))
    path = tmp_path / name
    if data is None:
        from safetensors.torch import save_file

        from cli_models import mlp

        save_file(mlp().state_dict(), str(path))
        data = path.read_bytes()[:-40]
    path.write_bytes(data)
    code = main(["analyze", "--model", "cli_models:mlp", "--weights", str(path), "--input", "2x4"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "not loaded" in err
    assert "will likely succeed" not in err


def test_strict_names_the_layer_in_cli_words_and_default_heals(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))
    base = ["compress", "--model", "cli_models:flipped", "--input", "1x3x8x8", "--no-onnx"]
    assert main([*base, "--out", str(tmp_path / "strict"), "--strict"]) == 2
    err = capsys.readouterr().err
    assert "--ignore conv1" in err and "ignore=[" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "strict").exists()
    assert main([*base, "--out", str(tmp_path / "healed")]) == 0
    report = (tmp_path / "healed" / "report.md").read_text()
    assert "## Groups kept whole" in report and "| conv1 |" in report


def test_analyze_predicts_what_compress_keeps_whole(capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))
    assert main(["analyze", "--model", "cli_models:flipped", "--input", "1x3x8x8", "--json"]) == 0
    groups = {g["root"]: g for g in json.loads(capsys.readouterr().out)["groups"]}
    assert not groups["conv1"]["prunable"] and "differs" in groups["conv1"]["reason"]
    assert main(["analyze", "--model", "cli_models:flipped", "--input", "1x3x8x8", "--json", "--no-check"]) == 0
    groups = {g["root"]: g for g in json.loads(capsys.readouterr().out)["groups"]}
    assert groups["conv1"]["prunable"]  # tracing alone cannot see the flip
