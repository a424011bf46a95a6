"""Coverage on medical-imaging, diffusion and segmentation libraries: MONAI, diffusers, segmentation-models-pytorch.

Each model is built small at random init (nothing is downloaded) and compressed with default
settings (ratio 0.5) in a fresh subprocess with a time limit, by the runner of benchmarks/coverage.py.
Beyond that table's columns, each compressed model is saved and loaded onto a fresh instance
(``reload identical``: the loaded model's outputs equal the compressed model's bit for bit) and
exported to ONNX with ``shrink.export_onnx`` (parity against PyTorch); when the export fails, the
dense model is exported too, so the table says whether the cut or the architecture is the cause.
Writes benchmarks/results/coverage_medgen.{md,json}.

None of these libraries is a dependency of shrink. Install them beside the venv, not into it
(segmentation-models-pytorch imports timm, which imports torchvision: see benchmarks/coverage.py):

    .venv/bin/pip install --no-deps --target .bench-pkgs monai diffusers segmentation_models_pytorch \\
        timm torchvision==0.28.0 requests urllib3 idna certifi charset_normalizer importlib_metadata zipp
    .venv/bin/python benchmarks/coverage_medgen.py [--only monai.UNet-2d,smp.PSPNet] [--update]
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from coverage import _write, arguments, compress_row, import_vision_libs, sweep  # noqa: E402


def _monai():
    import torch
    from monai.networks import nets

    img2, img3 = lambda: torch.randn(1, 1, 64, 64), lambda: torch.randn(1, 1, 32, 32, 32)  # noqa: E731
    return {
        "monai.UNet-2d": (lambda: nets.UNet(2, 1, 2, channels=(16, 32, 64, 128), strides=(2, 2, 2),
                                            num_res_units=2), img2),
        "monai.UNet-3d": (lambda: nets.UNet(3, 1, 2, channels=(16, 32, 64), strides=(2, 2), num_res_units=2), img3),
        "monai.BasicUNet": (lambda: nets.BasicUNet(2, 1, 2), img2),
        "monai.BasicUNetPlusPlus": (lambda: nets.BasicUNetPlusPlus(2, 1, 2), img2),
        "monai.DynUNet": (lambda: nets.DynUNet(2, 1, 2, kernel_size=[3, 3, 3, 3], strides=[1, 2, 2, 2],
                                               upsample_kernel_size=[2, 2, 2]), img2),
        "monai.SegResNet": (lambda: nets.SegResNet(2, init_filters=8, in_channels=1, out_channels=2), img2),
        "monai.AttentionUnet": (lambda: nets.AttentionUnet(2, 1, 2, channels=(16, 32, 64), strides=(2, 2)), img2),
    }


def _diffusers():
    import torch
    import diffusers as D

    blocks = dict(block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8)
    unet2d = lambda: D.UNet2DModel(sample_size=32, in_channels=3, out_channels=3,  # noqa: E731
                                   down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                                   up_block_types=("AttnUpBlock2D", "UpBlock2D"), **blocks)
    cond = lambda: D.UNet2DConditionModel(sample_size=32, in_channels=4, out_channels=4,  # noqa: E731
                                          down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                          up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                                          cross_attention_dim=32, attention_head_dim=8, **blocks)
    vae = lambda: D.AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4,  # noqa: E731
                                  down_block_types=("DownEncoderBlock2D",) * 2,
                                  up_block_types=("UpDecoderBlock2D",) * 2, **blocks)
    vq = lambda: D.VQModel(in_channels=3, out_channels=3, latent_channels=4, num_vq_embeddings=64,  # noqa: E731
                           down_block_types=("DownEncoderBlock2D",) * 2,
                           up_block_types=("UpDecoderBlock2D",) * 2, **blocks)
    tiny = lambda: D.AutoencoderTiny(encoder_block_out_channels=(16, 16, 16, 16),  # noqa: E731
                                     decoder_block_out_channels=(16, 16, 16, 16), num_encoder_blocks=(1, 1, 1, 1),
                                     num_decoder_blocks=(1, 1, 1, 1), latent_channels=4)
    image = lambda c=3: torch.randn(1, c, 32, 32)  # noqa: E731
    t = lambda: torch.tensor([10])  # noqa: E731
    return {
        "diffusers.UNet2DModel": (unet2d, lambda: (image(), t())),
        "diffusers.UNet2DConditionModel": (cond, lambda: (image(4), t(), torch.randn(1, 7, 32))),
        "diffusers.AutoencoderKL": (vae, image),
        "diffusers.VQModel": (vq, image),
        "diffusers.AutoencoderTiny": (tiny, image),
    }


def _smp():
    import torch
    import segmentation_models_pytorch as smp

    image = lambda: torch.randn(1, 3, 64, 64)  # noqa: E731
    kw = dict(encoder_name="resnet18", encoder_weights=None, classes=2)
    return {f"smp.{arch}": ((lambda a=arch: getattr(smp, a)(**kw)), image)
            for arch in ("Unet", "UnetPlusPlus", "FPN", "PSPNet", "DeepLabV3Plus", "Linknet", "MAnet", "PAN")}


def _models(name: str):
    prefix = name.split(".")[0]
    return {"monai": _monai, "diffusers": _diffusers, "smp": _smp}[prefix]()


NAMES = {"monai": ["monai.UNet-2d", "monai.UNet-3d", "monai.BasicUNet", "monai.BasicUNetPlusPlus", "monai.DynUNet",
                   "monai.SegResNet", "monai.AttentionUnet"],
         "diffusers": ["diffusers.UNet2DModel", "diffusers.UNet2DConditionModel", "diffusers.AutoencoderKL",
                       "diffusers.VQModel", "diffusers.AutoencoderTiny"],
         "smp": [f"smp.{a}" for a in ("Unet", "UnetPlusPlus", "FPN", "PSPNet", "DeepLabV3Plus", "Linknet", "MAnet",
                                      "PAN")]}


def _tensors(out):
    import torch

    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for v in out.values() for t in _tensors(v)]
    if isinstance(out, (tuple, list)):
        return [t for v in out for t in _tensors(v)]
    return [t for v in vars(out).values() for t in _tensors(v)] if hasattr(out, "__dict__") else []


def _short(exc: Exception) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:240]}"


def _never_run(model, args) -> int:
    """Parameters of modules the forward never calls on these inputs (smp's PSPNet: encoder stages past its depth)."""
    import torch

    called: set = set()
    hooks = [m.register_forward_hook(lambda m, _a, _o: called.add(m)) for m in model.modules()]
    try:
        with torch.no_grad():
            model(*args)
    finally:
        for h in hooks:
            h.remove()
    return sum(p.numel() for m in model.modules() if m not in called for p in m.parameters(recurse=False))


def _deploy(fresh):
    """Save -> load onto ``fresh()`` and ONNX export of the compressed model (and of the dense one if that fails)."""

    def then(model, result, x) -> dict:
        import torch

        import shrink

        args = x if isinstance(x, tuple) else (x,)
        row: dict = {"params_never_run": _never_run(model, args)}
        with tempfile.TemporaryDirectory() as tmp:
            try:
                loaded = shrink.load(shrink.save(result, Path(tmp) / "out"), fresh().eval()).eval()
                with torch.no_grad():
                    a, b = _tensors(result.model(*args)), _tensors(loaded(*args))
                row["reload_identical"] = len(a) == len(b) and all(torch.equal(p, q) for p, q in zip(a, b))
            except Exception as exc:  # noqa: BLE001 - the table records what fails
                row["reload_error"] = _short(exc)
            try:
                rep = shrink.export_onnx(result.model, x, Path(tmp) / "cut.onnx")
                row.update(onnx_max_rel_diff=max(o.max_rel_diff for o in rep.outputs), onnx_exporter=rep.exporter)
            except Exception as exc:  # noqa: BLE001
                row["onnx_error"] = _short(exc)
                try:
                    shrink.export_onnx(model, x, Path(tmp) / "dense.onnx")
                    row["dense_onnx"] = "exports"
                except Exception as dense_exc:  # noqa: BLE001
                    row["dense_onnx"] = f"fails too: {_short(dense_exc)}"
        return row

    return then


def _one(name: str) -> dict:
    """Compress one model (runs in a subprocess)."""
    import torch

    import_vision_libs()  # segmentation-models-pytorch imports timm, which imports torchvision
    factory, inputs = _models(name)[name]

    def build():
        torch.manual_seed(0)
        return factory().eval(), inputs()

    def fresh():
        torch.manual_seed(0)
        return factory()

    return compress_row(name, build, then=_deploy(fresh))


NOTES = """
Notes:
- smp's PSPNet runs only the first 3 stages of its encoder (``encoder_depth=3``); the resnet18's ``layer3`` and
  ``layer4`` (93% of its parameters) are built but never called, so nothing can be cut from them: "of the params
  that run" is the share removed among the parameters the forward uses.
- MONAI's BasicUNetPlusPlus computes all four ``final_conv_0_*`` heads and returns only the last without deep
  supervision: the three discarded heads are outside the traced graph, so their inputs' widths stay whole.
- A VAE's mid-block attention has one head: its heads are kept whole (the widths around it are cut).
- Before layers/norms.py, layers/resample.py and the renamed ONNX output (same machine, the same script on the
  code before them): MONAI UNet-2d 0% removed, UNet-3d 0%, BasicUNet 9.6% (the sweep was stopped there); the
  issue reported diffusers at 0.35-0.63x with 5 of 6 ONNX exports refused by ONNX Runtime, dense models too.
- Timings are noisy: 2 cores shared with other developers (load average above, at the start of the sweep).
"""


def _write_medgen(rows, info, out):
    rows = sorted(rows, key=lambda r: r["model"])
    _write(rows, info, out, stem="coverage_medgen", title="MONAI, diffusers and segmentation-models-pytorch",
           first="library", unit="models")
    lines = ["", "## Save, load and ONNX", "",
             "| model | params removed | of the params that run | reload identical | ONNX parity (max rel diff) "
             "| dense model exports |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        if r["status"] != "ok":
            continue
        reload = r.get("reload_error") or ("yes" if r.get("reload_identical") else "no: outputs differ")
        onnx = f"{r['onnx_max_rel_diff']:.1e} ({r['onnx_exporter']})" if "onnx_max_rel_diff" in r \
            else f"fails: {r.get('onnx_error', '')}"
        running = r["params_before"] - r.get("params_never_run", 0)
        share = f"{(r['params_before'] - r['params_after']) / running:.0%}" if running else "-"
        lines.append(f"| {r['model']} | {r['params_removed']:.0%} | {share} | {reload.replace('|', '/')} | "
                     f"{onnx.replace('|', '/')} | {r.get('dense_onnx', '-').replace('|', '/')} |")
    with open(out / "coverage_medgen.md", "a") as f:
        f.write("\n".join(lines) + "\n" + NOTES)


def main() -> None:
    parser = arguments(__doc__.splitlines()[0], unit="model")
    args = parser.parse_args()
    if args.one:
        print("ROW " + json.dumps(_one(args.one)))
        return
    names = [n for group in NAMES.values() for n in group]
    if args.only:
        names = args.only.split(",")
    import_vision_libs()
    import diffusers
    import monai
    import segmentation_models_pytorch as smp

    from _machine import machine

    info = machine()
    info.update(monai=monai.__version__, diffusers=diffusers.__version__, segmentation_models_pytorch=smp.__version__)
    info["inputs"] = ("MONAI 1x1x64x64 (3-D: 1x1x32x32x32), diffusers 1x3x32x32 (+ timestep 10; the conditional "
                      "U-Net 1x4x32x32 and 7 tokens of 32), smp 1x3x64x64 with a resnet18 encoder")
    sweep(__file__, {n: n for n in names}, args, parser, info, "coverage_medgen", _write_medgen)


if __name__ == "__main__":
    main()
