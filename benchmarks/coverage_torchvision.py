"""Coverage on torchvision's own models: classification, segmentation, video, optical flow, detection.

Each model is built at random init (``torchvision.models.get_model(name, weights=None)``; nothing is
downloaded) and compressed with default settings (ratio 0.5) in a fresh subprocess with a time
limit, by the same runner as benchmarks/coverage.py (timm). A model whose dense forward cannot run
here (detection models call torchvision C++ ops, such as ``nms``, that this CPU build of torch lacks)
is recorded as "skipped" with the reason and not counted. Detection outputs are compared by
structure and trailing dimensions only (how many boxes survive depends on the weights).
Writes benchmarks/results/coverage_torchvision.{md,json}.

    .venv/bin/python benchmarks/coverage_torchvision.py [--only resnet18,vit_b_16] [--jobs 2] [--update]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from coverage import _shapes, _write, arguments, compress_row, import_vision_libs, sweep  # noqa: E402

# one or two per family (the brief's list); the sweep can take every classifier with --only
CLASSIFICATION = [
    "resnet18", "resnet50", "resnext50_32x4d", "wide_resnet50_2", "mobilenet_v2", "mobilenet_v3_small",
    "efficientnet_b0", "efficientnet_v2_s", "convnext_tiny", "regnet_x_400mf", "regnet_y_400mf",
    "shufflenet_v2_x1_0", "squeezenet1_1", "densenet121", "googlenet", "inception_v3", "mnasnet0_5",
    "vgg11_bn", "alexnet", "vit_b_16", "swin_t", "swin_v2_t", "maxvit_t",
]
SEGMENTATION = ["fcn_resnet50", "deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large"]
VIDEO = ["r3d_18", "mc3_18", "r2plus1d_18", "s3d", "mvit_v2_s", "swin3d_t"]
OPTICAL_FLOW = ["raft_small"]
DETECTION = ["fasterrcnn_mobilenet_v3_large_320_fpn", "retinanet_resnet50_fpn", "ssdlite320_mobilenet_v3_large",
             "fcos_resnet50_fpn", "maskrcnn_resnet50_fpn", "keypointrcnn_resnet50_fpn"]
TASKS = {**{m: "classification" for m in CLASSIFICATION}, **{m: "segmentation" for m in SEGMENTATION},
         **{m: "video" for m in VIDEO}, **{m: "optical flow" for m in OPTICAL_FLOW},
         **{m: "detection" for m in DETECTION}}


def _inputs(name: str, task: str):
    """Example inputs at the size the model's default weights were trained on (smaller where that is allowed)."""
    import torch
    import torchvision.models as M

    if task == "optical flow":
        return torch.randn(1, 3, 128, 128), torch.randn(1, 3, 128, 128)
    if task == "detection":
        return ([torch.rand(3, 320, 320)],)
    if task == "segmentation":
        return torch.randn(1, 3, 224, 224)
    crop = M.get_model_weights(name).DEFAULT.transforms().crop_size[0]
    if task == "video":
        # 8 frames at 112 where the model allows it (3D ResNets, Swin3D); S3D's pooling and MViT's stride and
        # position tables need 16 frames at their own crop size (224)
        if name.startswith(("s3d", "mvit")):
            return torch.randn(1, 3, 16, crop, crop)
        return torch.randn(1, 3, 8, 112, 112)
    return torch.randn(1, 3, crop, crop)


def _detections(out):
    """Detection output shapes without the leading box count (how many boxes survive depends on the weights)."""
    shapes = _shapes(out)
    return [{k: v[1:] if isinstance(v, tuple) else v for k, v in d.items()} for d in shapes]


def _one(name: str) -> dict:
    """Compress one torchvision model (runs in a subprocess)."""
    task = TASKS.get(name, "classification")

    def build():
        _, torchvision = import_vision_libs()
        # detection and segmentation models load ImageNet backbone weights unless told not to
        extra = {"weights_backbone": None} if task in ("detection", "segmentation") else {}
        model = torchvision.models.get_model(name, weights=None, **extra).eval()
        return model, _inputs(name, task)

    row = compress_row(name, build, signature=_detections if task == "detection" else _shapes)
    row["task"] = task
    return row


NOTES = """
Notes:
- "cannot run here": the dense model itself fails on this machine (torchvision's C++ ops such as ``nms`` are
  missing from this CPU build of torch); these rows are not counted. RetinaNet and FCOS do run: at random init no
  box passes the score threshold, so ``nms`` is never called and their outputs are empty detections (the shape
  check compares empty boxes; compress's own checks run on the dense head outputs).
- GoogLeNet's auxiliary classifiers (6.4M of its 13M parameters) do not run in eval mode, so they are not cut.
- Timings are noisy: 2 cores shared with other agents (load average above, at the start of the sweep).
"""


def _write_tv(rows, info, out):
    rows = sorted(rows, key=lambda r: (r.get("task", ""), r["model"]))
    _write(rows, info, out, stem="coverage_torchvision", title="torchvision's models at random init",
           first="task", unit="models")
    with open(out / "coverage_torchvision.md", "a") as f:
        f.write(NOTES)


def main() -> None:
    parser = arguments(__doc__.splitlines()[0], unit="model")
    args = parser.parse_args()
    if args.one:
        print("ROW " + json.dumps(_one(args.one)))
        return
    _, torchvision = import_vision_libs()
    names = list(TASKS)
    if args.only:
        names = args.only.split(",")
    from _machine import machine

    info = machine()
    info["torchvision"] = torchvision.__version__
    info["inputs"] = ("classification 1x3xCROPxCROP (CROP: the default weights' crop size, each row's input), "
                      "segmentation 1x3x224x224, video 1x3x8x112x112 (3D ResNets, Swin3D) or 1x3x16x224x224 (S3D, MViT), "
                      "optical flow two 1x3x128x128, detection one 3x320x320 image")
    sweep(__file__, {n: n for n in names}, args, parser, info, "coverage_torchvision", _write_tv)


if __name__ == "__main__":
    main()
