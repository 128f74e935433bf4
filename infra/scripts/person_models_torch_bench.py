#!/usr/bin/env python3
"""PyTorch (CPU) reference timing for `osprey bench person-model`.

Our own PyTorch definitions of the seed body and gait recognisers Osprey
ports, with the parameter names of the published checkpoints (the manifests
in shared/fixtures/seed-models/*.keys.json):

* OSNet x1.0 (torchreid `osnet.py`): 7x7/2 conv · BN · ReLU stem, 3x3/2
  max-pool, three stages of omni-scale blocks (1x1 reduce to C/4, four
  streams of 1-4 "lite" 3x3 convs (1x1 conv, depthwise 3x3, BN, ReLU), one
  channel gate shared by the streams, 1x1 expand + BN, projected shortcut,
  ReLU), a 1x1 conv + 2x2 average pool after the first two stages, conv5,
  global average pool, Linear · BN1d · ReLU to 512.
* OSNet-AIN x1.0 (torchreid `osnet_ain.py`): the same, with instance norm in
  the stem and, in some blocks, on the expanded residual before the add
  (those blocks' expand has no BN); the streams are `conv2.{t}.layers`, and
  the reduce-and-pool steps are separate `pool2`/`pool3`.
* GaitBase (OpenGait `Baseline` with `gaitbase_da_casiab.yaml`): a ResNet-9
  of torchvision BasicBlocks [64, 128, 256, 512], strides [1, 2, 2, 1], run on
  every frame; max over time; 16 horizontal strips pooled as mean + max;
  one 512 -> 256 matrix per strip. The output [n, 256, 16].

Each model's input is prepared as upstream does it:

* torchreid's test transform: PIL bilinear resize to 256x128 (no aspect
  kept), ToTensor, ImageNet mean/std; the 512-d features L2-normalised
  (torchreid's cosine evaluation).
* OpenGait: each silhouette through `datasets/pretreatment.py`'s steps (row
  crop, cv2 INTER_CUBIC to height 64, centre on the column-sum median, 64
  wide), cut 10 columns a side to 64x44 (`BaseSilCuttingTransform`), /255;
  one sequence per forward (OpenGait's test sampler); the [256, 16] output
  flattened row-major (index c*16 + p) and unit-normalised, as Osprey stores
  a gait template. The per-frame steps are those of
  `gait_pretreat_reference.py` (OpenCV's own bicubic: IPP off).

Timing: decoded images in (PIL RGB crops; 8-bit grey silhouettes as
`cv2.imread` gives them), unit embeddings out: the same work as Osprey's
`PersonRecognizer::embed_bodies` / `embed_gait`. One warm-up pass, then
`--iters` timed passes, best and median reported as one JSON line. Bodies:
the crops named on the command line, repeated in order to `--batch`, one
forward pass. Gait: every sequence folder named, one forward each.

`--weights F` reads a safetensors file with the published names (the seed
fixtures' `*.weights.f16.safetensors` are full size: computed in float32
from those values). `--save-reference F` writes this model's embeddings of
the bench inputs (`embedding` [N, D], and for gait `frames` [N], the frames
each sequence kept) for `osprey bench person-model --reference F`.
`--self-check DIR` first checks the definitions against the upstream
reference fixtures (outputs of torchreid's and OpenGait's own code) and the
published manifests. `--write-crops DIR` writes the benchmark's body crops
(Market-1501 scene frames cut at the boxes of the appearance reference, and
the two Market-1501 query crops) as PNG, so both sides decode the same
pixels.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

# ---------------------------------------------------------------- OSNet


class ConvBnRelu(nn.Module):
    """conv (no bias) · BN (or affine instance norm) · optional ReLU: torchreid's
    ConvLayer / Conv1x1 / Conv1x1Linear, all named `conv` and `bn`."""

    def __init__(self, cin, cout, k=1, stride=1, padding=0, instance_norm=False, relu=True, norm=True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, padding, bias=False)
        if norm:
            self.bn = nn.InstanceNorm2d(cout, affine=True) if instance_norm else nn.BatchNorm2d(cout)
        else:
            self.bn = None
        self.relu = relu

    def forward(self, x):
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.relu else x


class LiteConv(nn.Module):
    """1x1 conv, depthwise 3x3 conv, BN, ReLU."""

    def __init__(self, cin, cout):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 1, bias=False)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False, groups=cout)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return F.relu(self.bn(self.conv2(self.conv1(x))))


class Gate(nn.Module):
    """Channel gate: global mean, 1x1 conv to C/16, ReLU, 1x1 conv, sigmoid, times the input."""

    def __init__(self, c):
        super().__init__()
        self.fc1 = nn.Conv2d(c, c // 16, 1)
        self.fc2 = nn.Conv2d(c // 16, c, 1)

    def forward(self, x):
        g = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(g))))


class Stream(nn.Module):
    """OSNet-AIN's stream of `depth` lite convs, under `layers`."""

    def __init__(self, c, depth):
        super().__init__()
        self.layers = nn.Sequential(*[LiteConv(c, c) for _ in range(depth)])

    def forward(self, x):
        return self.layers(x)


class OmniBlock(nn.Module):
    """One omni-scale block. `ain`: OSNet-AIN's naming (streams in `conv2`);
    `in_residual`: instance norm on the expanded residual (no BN there)."""

    def __init__(self, cin, cout, ain=False, in_residual=False):
        super().__init__()
        mid = cout // 4
        self.ain = ain
        self.conv1 = ConvBnRelu(cin, mid)
        if ain:
            self.conv2 = nn.ModuleList(Stream(mid, t) for t in range(1, 5))
        else:
            self.conv2a = LiteConv(mid, mid)
            self.conv2b = nn.Sequential(*[LiteConv(mid, mid) for _ in range(2)])
            self.conv2c = nn.Sequential(*[LiteConv(mid, mid) for _ in range(3)])
            self.conv2d = nn.Sequential(*[LiteConv(mid, mid) for _ in range(4)])
        self.gate = Gate(mid)
        self.conv3 = ConvBnRelu(mid, cout, relu=False, norm=not in_residual)
        self.downsample = ConvBnRelu(cin, cout, relu=False) if cin != cout else None
        self.IN = nn.InstanceNorm2d(cout, affine=True) if in_residual else None

    def forward(self, x):
        x1 = self.conv1(x)
        streams = self.conv2 if self.ain else [self.conv2a, self.conv2b, self.conv2c, self.conv2d]
        x2 = sum(self.gate(s(x1)) for s in streams)
        x3 = self.conv3(x2)
        if self.IN is not None:
            x3 = self.IN(x3)
        identity = self.downsample(x) if self.downsample is not None else x
        return F.relu(x3 + identity)


class OsNet(nn.Module):
    """Input: RGB [N, 3, 256, 128] normalised. Output: the 512-d feature (eval)."""

    CHANNELS = [64, 256, 384, 512]
    # OSNet-AIN x1.0: which blocks carry instance norm in the residual.
    AIN_BLOCKS = [[True, True], [False, True], [True, False]]

    def __init__(self, ain=False):
        super().__init__()
        c = self.CHANNELS
        self.conv1 = ConvBnRelu(3, c[0], 7, 2, 3, instance_norm=ain)
        self.ain = ain

        def stage(i, cin, cout, pool):
            flags = self.AIN_BLOCKS[i] if ain else [False, False]
            blocks = [OmniBlock(cin if j == 0 else cout, cout, ain, f) for j, f in enumerate(flags)]
            if pool and not ain:
                blocks.append(nn.Sequential(ConvBnRelu(cout, cout), nn.AvgPool2d(2, 2)))
            return nn.Sequential(*blocks)

        self.conv2 = stage(0, c[0], c[1], True)
        self.conv3 = stage(1, c[1], c[2], True)
        self.conv4 = stage(2, c[2], c[3], False)
        if ain:
            self.pool2 = nn.Sequential(ConvBnRelu(c[1], c[1]), nn.AvgPool2d(2, 2))
            self.pool3 = nn.Sequential(ConvBnRelu(c[2], c[2]), nn.AvgPool2d(2, 2))
        self.conv5 = ConvBnRelu(c[3], c[3])
        self.fc = nn.Sequential(nn.Linear(c[3], 512), nn.BatchNorm1d(512), nn.ReLU())
        self.classifier = nn.Linear(512, 1000)  # training only; its rows depend on the training set

    def featuremap(self, x):
        x = F.max_pool2d(self.conv1(x), 3, 2, 1)
        x = self.conv2(x)
        if self.ain:
            x = self.pool2(x)
        x = self.conv3(x)
        if self.ain:
            x = self.pool3(x)
        return self.conv5(self.conv4(x))

    def forward(self, x):
        return self.fc(self.featuremap(x).mean((2, 3)))


# ------------------------------------------------------------- GaitBase


class BasicBlock(nn.Module):
    """torchvision's BasicBlock: 3x3 conv (stride) · BN · ReLU · 3x3 conv · BN, + shortcut, ReLU."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        else:
            self.downsample = None

    def forward(self, x):
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(y + (self.downsample(x) if self.downsample is not None else x))


class PlainConv(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, 1, 1, bias=False)

    def forward(self, x):
        return self.conv(x)


class ResNet9(nn.Module):
    def __init__(self, widths=(64, 128, 256, 512), strides=(1, 2, 2, 1)):
        super().__init__()
        self.conv1 = PlainConv(1, widths[0])
        self.bn1 = nn.BatchNorm2d(widths[0])
        cin = widths[0]
        for i, (w, s) in enumerate(zip(widths, strides)):
            setattr(self, f"layer{i + 1}", nn.Sequential(BasicBlock(cin, w, s)))
            cin = w

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class PerFrame(nn.Module):
    """Runs the 2-D backbone on every frame ([n, c, s, h, w] in and out)."""

    def __init__(self):
        super().__init__()
        self.forward_block = ResNet9()

    def forward(self, x):
        n, c, s, h, w = x.shape
        y = self.forward_block(x.transpose(1, 2).reshape(n * s, c, h, w))
        return y.reshape(n, s, *y.shape[1:]).transpose(1, 2)


class Necks(nn.Module):
    """OpenGait's separate BNNecks (training only: the classifier on top of the
    embedding); held so the checkpoint loads whole."""

    def __init__(self, parts=16, dim=256, classes=74):
        super().__init__()
        self.fc_bin = nn.Parameter(torch.zeros(parts, dim, classes))
        self.bn1d = nn.BatchNorm1d(parts * dim)


class Strips(nn.Module):
    def __init__(self, parts=16, cin=512, cout=256):
        super().__init__()
        self.fc_bin = nn.Parameter(torch.zeros(parts, cin, cout))

    def forward(self, x):  # [n, c, p] -> [n, out, p]
        return torch.matmul(x.permute(2, 0, 1), self.fc_bin).permute(1, 2, 0)


class GaitBase(nn.Module):
    """Input: silhouettes [n, s, 64, 44] in 0..1. Output: embedding [n, 256, 16]."""

    PARTS = 16

    def __init__(self):
        super().__init__()
        self.Backbone = PerFrame()
        self.FCs = Strips()
        self.BNNecks = Necks()

    def forward(self, sils):
        x = self.Backbone(sils.unsqueeze(1))  # [n, 512, s, 16, 11]
        x = x.max(2).values  # temporal max
        n, c = x.shape[:2]
        z = x.reshape(n, c, self.PARTS, -1)
        return self.FCs(z.mean(-1) + z.max(-1).values)


# ------------------------------------------------------------- models


MODELS = {
    "osnet-x1_0": ("body", lambda: OsNet(ain=False), "osnet_x1_0"),
    "osnet-ain-x1_0": ("body", lambda: OsNet(ain=True), "osnet_ain_x1_0"),
    "gaitbase": ("gait", GaitBase, "gaitbase"),
}
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def load_weights(net, path):
    from safetensors.torch import load_file

    sd = {k: (v.float() if v.is_floating_point() else v) for k, v in load_file(path).items()}
    # Training counters that a definition may not hold are not weights.
    own = net.state_dict()
    sd = {k: v for k, v in sd.items() if k in own or not k.endswith("num_batches_tracked")}
    net.load_state_dict(sd, strict=True)
    return net.eval()


def manifest_check(net, keys_file):
    want = json.load(open(keys_file))
    have = {k: list(v.shape) for k, v in net.state_dict().items()}
    if have != want:
        missing = sorted(set(want) - set(have))[:5]
        extra = sorted(set(have) - set(want))[:5]
        shape = [k for k in want if k in have and have[k] != want[k]][:5]
        sys.exit(f"names/shapes differ from {keys_file}: missing {missing}, extra {extra}, shape {shape}")
    return len(want)


def rel_err(got, want):
    return ((got - want).abs().max() / want.abs().max()).item()


def self_check(fixtures):
    from safetensors.torch import load_file

    report = {}
    for model_id, (kind, build, stem) in MODELS.items():
        net = build()
        report[f"{model_id}_manifest"] = f"{manifest_check(net, f'{fixtures}/{stem}.keys.json')} tensors match"
        load_weights(net, f"{fixtures}/{stem}.weights.f16.safetensors")
        io = load_file(f"{fixtures}/{stem}.io.safetensors")
        with torch.inference_mode():
            if kind == "body":
                report[f"{model_id}_feature_rel_err"] = rel_err(net(io["image"]), io["feature"])
                report[f"{model_id}_featuremap_rel_err"] = rel_err(net.featuremap(io["image"]), io["featuremap"])
            else:
                report[f"{model_id}_embedding_rel_err"] = rel_err(net(io["silhouettes"]), io["embedding"])
    worst = max(v for k, v in report.items() if k.endswith("rel_err"))
    if worst > 1e-4:
        sys.exit(f"self-check failed: {report}")
    return report


# ------------------------------------------------------------- inputs


def write_crops(data, out):
    """The benchmark's person crops as PNG: the Market-1501 scene frames cut at
    the appearance reference's hand-drawn boxes, and the two query crops."""
    from PIL import Image

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    doc = json.load(open(REPO / "libs/osprey-models/tests/data/appearance_reference.json"))
    written = []
    for i, b in enumerate(doc["sanity"]["boxes"]):
        x0, y0, x1, y1 = b["box"]
        frame = Image.open(Path(data) / "person_search_demo/data/samples" / b["frame"]).convert("RGB")
        name = out / f"{i:02d}_{b['identity']}_{Path(b['frame']).stem}.png"
        frame.crop((x0, y0, x1, y1)).save(name)
        written.append(name)
    for q in sorted((Path(data) / "person_search_demo/query").glob("*.jpg")):
        name = out / f"q_{q.stem}.png"
        Image.open(q).convert("RGB").save(name)
        written.append(name)
    return written


def body_inputs(paths, batch):
    """Decoded RGB crops, the named files (folders: their images by name)
    repeated in order to `batch`."""
    from PIL import Image

    files = []
    for p in map(Path, paths):
        files += sorted(f for f in p.iterdir() if f.suffix.lower() in (".png", ".jpg", ".jpeg")) if p.is_dir() else [p]
    if not files:
        sys.exit("no crops")
    return [Image.open(files[i % len(files)]).convert("RGB") for i in range(batch)]


def gait_inputs(folders):
    """Per sequence folder: its silhouettes by file name, decoded as OpenGait's
    pretreatment reads them (cv2.IMREAD_GRAYSCALE)."""
    import cv2

    seqs = []
    for d in map(Path, folders):
        files = sorted(f for f in d.iterdir() if f.suffix.lower() in (".png", ".jpg", ".jpeg"))
        if not files:
            sys.exit(f"{d}: no silhouettes")
        seqs.append([cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) for f in files])
    return seqs


def body_fn(net, crops):
    from torchvision import transforms as T

    # torchreid's test transform (build_transforms: Resize, ToTensor, Normalize).
    transform = T.Compose([T.Resize((256, 128)), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])

    def run():
        x = torch.stack([transform(c) for c in crops])
        return F.normalize(net(x), dim=1), None

    return run


def gait_fn(net, seqs):
    import cv2

    sys.path.insert(0, str(HERE))
    from gait_pretreat_reference import model_frame  # OpenGait's per-frame pretreatment + cut

    cv2.ipp.setUseIPP(False)  # OpenCV's own bicubic, as Osprey reproduces it

    def run():
        out, kept = [], []
        for frames in seqs:
            cut = [f for f in (model_frame(img)[0] for img in frames) if f is not None]
            x = torch.from_numpy(np.stack(cut)).float().div(255.0).unsqueeze(0)  # [1, s, 64, 44]
            e = net(x).reshape(1, -1)  # [1, 256 * 16], index c * 16 + p
            out.append(F.normalize(e, dim=1))
            kept.append(len(cut))
        return torch.cat(out), torch.tensor(kept, dtype=torch.float32)

    return run


# ---------------------------------------------------------------- main


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=sorted(MODELS))
    p.add_argument("--weights", help="safetensors with the published names")
    p.add_argument("--inputs", nargs="+", default=[], help="body: crop files or folders; gait: sequence folders")
    p.add_argument("--batch", type=int, default=32, help="body crops per pass (inputs repeated to fill it)")
    p.add_argument("--iters", type=int, default=5, help="timed passes after one warm-up; best and median reported")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (and OpenCV's)")
    p.add_argument("--save-reference", metavar="FILE", help="write the embeddings of the inputs")
    p.add_argument("--self-check", metavar="FIXTURES", help="check the definitions against shared/fixtures/seed-models")
    p.add_argument("--write-crops", nargs=2, metavar=("DATA", "DIR"), help="write the bench crops from DATA into DIR")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    out = {"impl": "pytorch", "torch": torch.__version__}
    if args.write_crops:
        out["crops"] = len(write_crops(*args.write_crops))
    if args.self_check:
        out["self_check"] = self_check(args.self_check)
    if not args.model:
        print(json.dumps(out))
        return
    if not (args.weights and args.inputs):
        sys.exit("--model needs --weights and --inputs")

    kind, build, _ = MODELS[args.model]
    net = load_weights(build(), args.weights)
    if kind == "body":
        run = body_fn(net, body_inputs(args.inputs, args.batch))
        units, frames = args.batch, None
    else:
        import cv2

        cv2.setNumThreads(args.threads)
        seqs = gait_inputs(args.inputs)
        run = gait_fn(net, seqs)
        units, frames = len(seqs), sum(len(s) for s in seqs)

    times = []
    with torch.inference_mode():
        emb, kept = run()  # warm-up (and the reference output)
        for _ in range(max(1, args.iters)):
            t = time.perf_counter()
            run()
            times.append(time.perf_counter() - t)
    if args.save_reference:
        from safetensors.torch import save_file

        ref = {"embedding": emb.contiguous()}
        if kept is not None:
            ref["frames"] = kept
        save_file(ref, args.save_reference)
    best, median = min(times), statistics.median(times)
    out.update(
        {
            "model": args.model,
            "modality": kind,
            "batch": units,
            "threads": torch.get_num_threads(),
            "iters": len(times),
            "best_s": best,
            "median_s": median,
            "embeddings_per_s": units / best,
            "median_embeddings_per_s": units / median,
        }
    )
    if frames is not None:
        out.update({"frames": frames, "frames_kept": int(kept.sum()), "frames_per_s": frames / best,
                    "median_frames_per_s": frames / median})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
