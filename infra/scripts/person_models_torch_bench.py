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
* CLIP3DReID's student (liufeng2915/Clip3DReid `model.py`, `tiny_vit.py`):
  TinyViT-21M/224 (conv stem, MBConv stage, three stages of windowed
  attention with learned offset biases + depthwise `local_conv` + MLP,
  patch merging between stages), its 49 LayerNormed last-stage tokens
  weighed by `proj` into one 576-d vector, `sv_fc` to 512.
* BigGait (OpenGait `BigGait__Dinov2_Gaitbase`, `BigGait_CCPG.yaml`): DINOv2
  ViT-S/14 on 448x224 frames (position grid resampled bicubically), the
  final and four mid-layer token sets resized to 64x32, a mask branch and
  its closing into a foreground, denoising and appearance branches at the
  foreground pixels, and a two-stem GaitBase head with attention fusion;
  max over the sequence, 16 strips, one 512 -> 256 matrix each.
* SapiensID (mk-minchul/sapiensid `models/sapiens_id`, `configs/base.yaml`):
  a ViT-B (width 512, depth 24, 16 heads, CVLface's blocks) over "retina"
  patches: 32x32 patches of three 384x384 views (whole image, body box, face
  box, the boxes from the keypoints), every foreground patch kept, position
  embeddings resampled per view; KP-RPE's keypoint-relative attention biases
  (19 keypoints, iRPE product buckets); the semantic attention head
  (differential attention of 76 keypoint queries, plus the most similar
  token per query) and two Linear · BatchNorm1d to 4096. One sample at a
  time, as Osprey's port computes it (see the SapiensID section below).

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
* CLIP3DReID's test transform: PIL bilinear resize to 224x224, ToTensor,
  CLIP mean/std; `test.py`'s embedding: the global features of the crop
  and of its mirror image added, L2-normalised.
* BigGait: each RGB crop through OpenGait's `datasets/pretreatment_rgb.py`
  (cv2 INTER_LINEAR to height 256 keeping the aspect, centre pad or crop to
  128, BGR -> RGB, ratio = width / height), the evaluator's ImageNet
  normalisation (float64), one sequence per forward; the [256, 16] output
  flattened and unit-normalised like GaitBase's.
* SapiensID: no detectors here. Its inputs, the 384x384 square image and
  the 22 keypoints found on it (Osprey: MoveNet Thunder and MTCNN standing
  in for upstream's YOLOv8-pose and face detector), are Osprey's, read from
  `--prepared FILE` (`osprey bench person-model --model sapiensid
  --save-inputs FILE`); with `--inputs` the crops also go through upstream's
  test transform here (white square pad, bilinear 384 without antialias,
  (v - 0.5) / 0.5) and `input_image_max_abs_diff` reports how far Osprey's
  image is from it. Timed: the network on the prepared batch (its host-side
  box and grid arithmetic included) and the unit normalisation, the same
  work as Osprey's `--json` `embeddings_per_s` for SapiensID.

Timing: decoded images in (PIL RGB crops; 8-bit grey silhouettes as
`cv2.imread` gives them), unit embeddings out: the same work as Osprey's
`PersonRecognizer::embed_bodies` / `embed_gait`. One warm-up pass, then
`--iters` timed passes, best and median reported as one JSON line. Bodies:
the crops named on the command line, repeated in order to `--batch`, one
forward pass. Gait: every sequence folder named, one forward each
(silhouettes for GaitBase, RGB person crops for BigGait).

`--weights F` reads a safetensors file with the published names (the seed
fixtures' `*.weights.f16.safetensors` are full size: computed in float32
from those values). CLIP3DReID, BigGait and SapiensID publish no weights
here and their fixtures are reduced configurations: `--make-weights F`
writes seeded random full-size weights (BatchNorm statistics from one pass
over `--inputs`; SapiensID's need none, 1.6 GB), for timing and parity
only. `--write-walkers DATA DIR` writes
BigGait's bench sequences: RGB crops of the walkers of All-in-One-Gait's
demo clips, boxed by CenterNet in the TF.js runtime. `--save-reference F` writes this model's embeddings of
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
import math
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


# ------------------------------------------------------------- CLIP3DReID


class ConvBn(nn.Module):
    """TinyViT's Conv2d_BN: a bias-free convolution `c` and a BatchNorm `bn`."""

    def __init__(self, cin, cout, k=1, stride=1, groups=1):
        super().__init__()
        self.c = nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return self.bn(self.c(x))


class MbConv(nn.Module):
    """Inverted residual of TinyViT's first stage: 1x1 up, depthwise 3x3,
    1x1 down, each a ConvBn; GELU after the first two and after the add."""

    def __init__(self, c, hidden):
        super().__init__()
        self.conv1 = ConvBn(c, hidden)
        self.conv2 = ConvBn(hidden, hidden, 3, groups=hidden)
        self.conv3 = ConvBn(hidden, c)

    def forward(self, x):
        y = self.conv3(F.gelu(self.conv2(F.gelu(self.conv1(x)))))
        return F.gelu(x + y)


class Merge(nn.Module):
    """Patch merging between stages: 1x1, GELU, depthwise 3x3 stride 2, GELU, 1x1."""

    def __init__(self, cin, cout):
        super().__init__()
        self.conv1 = ConvBn(cin, cout)
        self.conv2 = ConvBn(cout, cout, 3, 2, groups=cout)
        self.conv3 = ConvBn(cout, cout)

    def forward(self, x):  # [B, C, H, W] -> [B, C', H/2, W/2]
        return self.conv3(F.gelu(self.conv2(F.gelu(self.conv1(x)))))


def window_offsets(window):
    """Index [N, N] of the offset (|dy|, |dx|) between each pair of a
    window's points (row-major), offsets numbered in order of first
    appearance; and how many offsets there are."""
    pts = [(y, x) for y in range(window) for x in range(window)]
    ids = {}
    idx = [[ids.setdefault((abs(a[0] - b[0]), abs(a[1] - b[1])), len(ids)) for b in pts] for a in pts]
    return torch.tensor(idx), len(ids)


class WindowAttention(nn.Module):
    """TinyViT attention inside one window: own LayerNorm, qkv viewed per
    head as [q | k | v] slices, logits scaled by head_dim^-1/2 plus a learned
    bias per head and offset."""

    def __init__(self, dim, heads, window):
        super().__init__()
        self.heads, self.hd = heads, dim // heads
        idx, offsets = window_offsets(window)
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attention_biases = nn.Parameter(torch.zeros(heads, offsets))
        self.register_buffer("bias_index", idx, persistent=False)

    def forward(self, x):  # [B', N, C]
        b, n, c = x.shape
        qkv = self.qkv(self.norm(x)).view(b, n, self.heads, 3 * self.hd).transpose(1, 2)
        q, k, v = qkv.split(self.hd, dim=-1)
        logits = q @ k.transpose(-1, -2) * self.hd**-0.5 + self.attention_biases[:, self.bias_index]
        return self.proj((logits.softmax(-1) @ v).transpose(1, 2).reshape(b, n, c))


class TokenMlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(self.norm(x))))


class ViTBlock(nn.Module):
    """x += windowed attention; depthwise 3x3 ConvBn on the map (no residual); x += MLP."""

    def __init__(self, dim, heads, window, mlp_ratio):
        super().__init__()
        self.window = window
        self.attn = WindowAttention(dim, heads, window)
        self.local_conv = ConvBn(dim, dim, 3, groups=dim)
        self.mlp = TokenMlp(dim, int(dim * mlp_ratio))

    def attend(self, x, h, w):  # tokens [B, H*W, C]
        ws = self.window
        if h == ws and w == ws:
            return self.attn(x)
        b, _, c = x.shape
        ph, pw = -h % ws, -w % ws  # zero padding at the bottom and right
        m = F.pad(x.view(b, h, w, c), (0, 0, 0, pw, 0, ph))
        nh, nw = (h + ph) // ws, (w + pw) // ws
        win = m.view(b, nh, ws, nw, ws, c).transpose(2, 3).reshape(-1, ws * ws, c)
        y = self.attn(win).view(b, nh, nw, ws, ws, c).transpose(2, 3).reshape(b, h + ph, w + pw, c)
        return y[:, :h, :w].reshape(b, h * w, c)

    def forward(self, x, h, w):
        b, l, c = x.shape
        x = x + self.attend(x, h, w)
        x = self.local_conv(x.transpose(1, 2).reshape(b, c, h, w)).reshape(b, c, l).transpose(1, 2)
        return x + self.mlp(x)


class Stage(nn.Module):
    """`layers.{s}`: its blocks, then (all but the last) a patch merging."""

    def __init__(self, blocks, downsample):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample


class TinyVit(nn.Module):
    """TinyViT's encoder as CLIP3DReID uses it (classifier head an identity):
    [B, 3, 224, 224] -> the LayerNormed last-stage tokens [B, 49, 576]."""

    def __init__(self, cfg):
        super().__init__()
        e = cfg["embed_dims"]
        self.patch_embed = nn.Module()
        self.patch_embed.seq = nn.Sequential(ConvBn(3, e[0] // 2, 3, 2), nn.GELU(), ConvBn(e[0] // 2, e[0], 3, 2))
        stages = [Stage([MbConv(e[0], int(e[0] * cfg["mbconv_ratio"])) for _ in range(cfg["depths"][0])], Merge(e[0], e[1]))]
        for s in range(1, 4):
            blocks = [ViTBlock(e[s], cfg["num_heads"][s], cfg["window_sizes"][s], cfg["mlp_ratio"]) for _ in range(cfg["depths"][s])]
            stages.append(Stage(blocks, Merge(e[s], e[s + 1]) if s < 3 else None))
        self.layers = nn.ModuleList(stages)
        self.norm_head = nn.LayerNorm(e[3])

    def forward(self, x):
        x = self.patch_embed.seq(x)
        for block in self.layers[0].blocks:
            x = block(x)
        x = self.layers[0].downsample(x)
        for stage in self.layers[1:]:
            b, c, h, w = x.shape
            t = x.flatten(2).transpose(1, 2)
            for block in stage.blocks:
                t = block(t, h, w)
            x = t.transpose(1, 2).reshape(b, c, h, w)
            if stage.downsample is not None:
                x = stage.downsample(x)
        return self.norm_head(x.flatten(2).transpose(1, 2))


class IdClassifier(nn.Module):
    """The training-time identity classifier (`classifier.classifier`)."""

    def __init__(self, dim, classes):
        super().__init__()
        self.classifier = nn.Linear(dim, classes)


class Clip3dReid(nn.Module):
    """The CLIP3DReID student as the training script's `Model` names it.
    `forward_feature`: (global [B, 512], local [B, 49, 576]); `forward`: the
    evaluation embedding of `test.py`, L2-normalised global(x) + global(flip x)."""

    FULL = {"embed_dims": [96, 192, 384, 576], "depths": [2, 2, 6, 2], "num_heads": [3, 6, 12, 18],
            "window_sizes": [7, 7, 14, 7], "mlp_ratio": 4.0, "mbconv_ratio": 4.0, "num_classes": 632}
    TEACHER = 768  # CLIP ViT-L/14 width: the teacher-side layers (training only)

    def __init__(self, cfg=None):
        super().__init__()
        cfg = dict(self.FULL, **(cfg or {}))
        feat = 512
        self.sv_fc = nn.Linear(576, feat)
        self.tv_fc = nn.Linear(self.TEACHER, feat)
        self.tt_fc = nn.Linear(self.TEACHER, 576)
        self.sv_bn = nn.BatchNorm1d(feat)  # commented out upstream: not applied
        self.tv_bn = nn.BatchNorm1d(feat)
        self.student_encoder = nn.Module()
        self.student_encoder.base = TinyVit(cfg)
        tokens = (224 // 32) ** 2
        self.student_encoder.proj = nn.Parameter(torch.zeros(tokens, 1))
        self.classifier = IdClassifier(feat, cfg["num_classes"])
        self.classifier_teacher = IdClassifier(feat, cfg["num_classes"])

    def forward_feature(self, x):
        local = self.student_encoder.base(x)
        pooled = (local.transpose(1, 2) @ self.student_encoder.proj).squeeze(-1)  # [B, 576]
        return self.sv_fc(pooled), local

    def forward(self, x):
        both, _ = self.forward_feature(torch.cat([x, x.flip(3)]))
        g, g_flip = both.chunk(2)
        return F.normalize(g + g_flip, dim=1)


# ---------------------------------------------------------------- BigGait


class DinoAttention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        a = (q * (c // self.heads) ** -0.5) @ k.transpose(-1, -2)
        return self.proj((a.softmax(-1) @ v).transpose(1, 2).reshape(b, n, c))


class LayerScale(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * self.gamma


class DinoMlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class DinoBlock(nn.Module):
    """Pre-norm ViT block with LayerScale: x += ls1(attn(norm1 x)); x += ls2(mlp(norm2 x))."""

    def __init__(self, dim, heads, mlp_ratio):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = DinoAttention(dim, heads)
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = DinoMlp(dim, dim * mlp_ratio)
        self.ls2 = LayerScale(dim)

    def forward(self, x):
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class Dinov2(nn.Module):
    """DINOv2 ViT (release names). `forward` on [f, 3, H, W] gives the final
    LayerNorm's patch tokens [f, L, C] and the LayerNorm (no affine) of the
    concatenated outputs of four evenly spaced blocks [f, L, 4C], class token
    dropped, as OpenGait's BigGait copy of DINOv2 returns them."""

    def __init__(self, dim=384, depth=12, heads=6, patch=14, img_size=518, mlp_ratio=4):
        super().__init__()
        self.patch, self.grid = patch, img_size // patch
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid**2 + 1, dim))
        self.mask_token = nn.Parameter(torch.zeros(1, dim))  # training only
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, dim, patch, patch)
        self.blocks = nn.ModuleList(DinoBlock(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.taps = [int(i * depth / 4 + depth / 4 - 1) for i in range(4)]

    def position(self, rows, cols):
        """The learned grid resampled to rows x cols with DINOv2's offset
        scale factor ((rows + 0.1) / grid, (cols + 0.1) / grid), bicubic."""
        g, c = self.grid, self.pos_embed.shape[-1]
        grid = self.pos_embed[:, 1:].reshape(1, g, g, c).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, scale_factor=((rows + 0.1) / g, (cols + 0.1) / g), mode="bicubic")
        assert grid.shape[-2:] == (rows, cols)
        return torch.cat([self.pos_embed[:, :1], grid.permute(0, 2, 3, 1).reshape(1, rows * cols, c)], 1)

    def forward(self, x):
        rows, cols = x.shape[2] // self.patch, x.shape[3] // self.patch
        t = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls_token.expand(len(t), -1, -1), t], 1) + self.position(rows, cols)
        taps = []
        for i, block in enumerate(self.blocks):
            t = block(t)
            if i in self.taps:
                taps.append(t)
        mid = torch.cat(taps, -1)
        mid = F.layer_norm(mid, mid.shape[-1:], eps=1e-6)
        return self.norm(t)[:, 1:], mid[:, 1:]


class Distill(nn.Module):
    """OpenGait's `infoDistillation` branch (eval): BN (no affine) of the
    input, then `down_sampling`; softmax, or sigmoid after `bn_t`.
    `deep`: down_sampling is Linear(C, C/2) · BN · GELU · Linear(C/2, out)."""

    def __init__(self, cin, cout, softmax, deep=False, up=False):
        super().__init__()
        self.bn_s = nn.BatchNorm1d(cin, affine=False)
        self.bn_t = nn.BatchNorm1d(cout, affine=False)
        if deep:
            self.down_sampling = nn.Sequential(nn.Linear(cin, cin // 2), nn.BatchNorm1d(cin // 2, affine=False),
                                               nn.GELU(), nn.Linear(cin // 2, cout))
        else:
            self.down_sampling = nn.Linear(cin, cout)
        if up:
            self.up_sampling = nn.Linear(cout, cin)  # feeds a training loss only
        self.softmax = softmax

    def forward(self, x):  # [pixels, C]
        y = self.down_sampling(self.bn_s(x))
        return y.softmax(-1) if self.softmax else torch.sigmoid(self.bn_t(y))


class Wrapped(nn.Module):
    """OpenGait's SetBlockWrapper: the wrapped module sits under `forward_block`."""

    def __init__(self, block):
        super().__init__()
        self.forward_block = block

    def forward(self, x):
        return self.forward_block(x)


class GaitStem(nn.Module):
    """conv3x3 (no bias, under `conv1.conv`) · BN · ReLU · one BasicBlock (`layer1`)."""

    def __init__(self, cin, c0):
        super().__init__()
        self.conv1 = PlainConv(cin, c0)
        self.bn1 = nn.BatchNorm2d(c0)
        self.layer1 = nn.Sequential(BasicBlock(c0, c0, 1))

    def forward(self, x):
        return self.layer1(F.relu(self.bn1(self.conv1(x))))


class GaitPost(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.layer2 = nn.Sequential(BasicBlock(ch[0], ch[1], 2))
        self.layer3 = nn.Sequential(BasicBlock(ch[1], ch[2], 2))
        self.layer4 = nn.Sequential(BasicBlock(ch[2], ch[3], 1))

    def forward(self, x):
        return self.layer4(self.layer3(self.layer2(x)))


class Fusion(nn.Module):
    """AttentionFusion of two maps: per channel c, softmax over the two
    logits at channels 2c and 2c + 1, weighted sum of the inputs."""

    def __init__(self, c0, squeeze):
        super().__init__()
        hidden = c0 // squeeze
        self.conv = Wrapped(nn.Sequential(
            nn.Conv2d(2 * c0, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, 1, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU(),
            nn.Conv2d(hidden, 2 * c0, 1, bias=False)))

    def forward(self, a, b):
        f, c, h, w = a.shape
        score = self.conv(torch.cat([a, b], 1)).view(f, c, 2, h, w).softmax(2)
        return a * score[:, :, 0] + b * score[:, :, 1]


class GaitHead(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        ch = cfg["channels"]
        self.pre_part = Wrapped(GaitStem(cfg["denoising_dim"], ch[0]))
        self.pre_rgb = Wrapped(GaitStem(cfg["appearance_dim"], ch[0]))
        self.post_backbone = Wrapped(GaitPost(ch))
        self.FCs = Strips(16, ch[3], cfg["fc_out"])
        self.BNNecks = Necks(16, cfg["fc_out"], cfg["classes"])  # training only
        self.fusion = Fusion(ch[0], cfg["squeeze_ratio"])

    def frames(self, den, app):  # [f, 16, h, w] each -> [f, C3, h/4, w/4]
        return self.post_backbone(self.fusion(self.pre_part(den), self.pre_rgb(app)))


class BigGait(nn.Module):
    """OpenGait's BigGait__Dinov2_Gaitbase (eval). `forward(frames, ratios)`:
    frames [n, s, 3, 2w, w] RGB 0..255 as pretreatment_rgb writes them,
    ratios [n, s] the raw crops' width / height -> embedding [n, fc_out, 16].
    `trace` (a dict) collects the intermediates the fixture holds."""

    CCPG = {"dino": {"dim": 384, "depth": 12, "heads": 6, "patch": 14, "img_size": 518, "mlp_ratio": 4},
            "image_size": 224, "sils_size": 32, "denoising_dim": 16, "appearance_dim": 16,
            "channels": [64, 128, 256, 512], "squeeze_ratio": 16, "fc_out": 256, "classes": 100}
    MEAN = [0.485, 0.456, 0.406]
    STD = [0.229, 0.224, 0.225]

    def __init__(self, cfg=None):
        super().__init__()
        cfg = dict(self.CCPG, **(cfg or {}))
        self.cfg = cfg
        c = cfg["dino"]["dim"]
        self.Denoising_Branch = Distill(4 * c, cfg["denoising_dim"], softmax=True, deep=True)
        self.Appearance_Branch = Distill(4 * c, cfg["appearance_dim"], softmax=False)
        self.Mask_Branch = Distill(c, 2, softmax=True, up=True)
        self.gait_net = GaitHead(cfg)
        self.backbone = Dinov2(**cfg["dino"])

    def foreground(self, probs):
        """get_body + get_edge on the mask probabilities [f, h, w, 2] -> [f, h, w]."""
        f, h, w, _ = probs.shape
        r = torch.round(probs[..., 0])
        edge = r[:, :5].sum((1, 2)) + r[:, -5:].sum((1, 2))
        p = torch.where((edge > 5 * w)[:, None, None], probs[..., 1], probs[..., 0])
        b = torch.round(p).unsqueeze(1)
        # Closing with the out-of-image pixels ignored: max-pool pads with -inf.
        dilated = F.max_pool2d(b, 3, 1, 1)
        eroded = -F.max_pool2d(-dilated, 5, 1, 2)
        d, e = dilated[:, 0] > 0.5, eroded[:, 0] > 0.5
        return (d ^ e).float() * p + e.float()

    def forward(self, frames, ratios, trace=None):
        cfg = self.cfg
        n, s, ch, h, w = frames.shape
        f = n * s
        mean = torch.tensor(self.MEAN, dtype=torch.float64).view(1, 1, 3, 1, 1) * 255
        std = torch.tensor(self.STD, dtype=torch.float64).view(1, 1, 3, 1, 1) * 255
        x = ((frames.double() - mean) / std).float().reshape(f, ch, h, w)
        size = cfg["image_size"]
        x = F.interpolate(x, (2 * size, size), mode="bilinear", align_corners=False)
        last, mid = self.backbone(x)
        rows, cols = 2 * size // self.backbone.patch, size // self.backbone.patch
        mh, mw = 2 * cfg["sils_size"], cfg["sils_size"]

        def to_pixels(t):  # [f, L, C] -> [f, mh * mw, C]
            m = t.transpose(1, 2).reshape(f, -1, rows, cols)
            return F.interpolate(m, (mh, mw), mode="bilinear", align_corners=False).flatten(2).transpose(1, 2)

        last_px, mid_px = to_pixels(last), to_pixels(mid)
        # Columns a frame of this aspect covers on the map (padding_resize of ones).
        need = (mh * ratios.float().reshape(-1)).int()
        valid = torch.zeros(f, mh, mw, dtype=torch.bool)
        for i, k in enumerate(need.tolist()):
            a = (mw - k) // 2 if k < mw else 0
            valid[i, :, a:a + min(k, mw)] = True
        probs = torch.zeros(f, mh * mw, 2)
        v = valid.view(f, -1)
        probs[v] = self.Mask_Branch(last_px[v])
        fg = self.foreground(probs.view(f, mh, mw, 2)).view(f, -1)
        keep = fg != 0
        sel = mid_px[keep]
        den = torch.zeros(f, mh * mw, cfg["denoising_dim"])
        den[keep] = self.Denoising_Branch(sel)
        app = torch.zeros(f, mh * mw, cfg["appearance_dim"])
        app[keep] = self.Appearance_Branch(sel)
        den = den.transpose(1, 2).reshape(f, -1, mh, mw)
        app = app.transpose(1, 2).reshape(f, -1, mh, mw)
        maps = self.gait_net.frames(den, app)  # [f, C3, mh/4, mw/4]
        pooled = maps.view(n, s, *maps.shape[1:]).max(1).values  # over each sequence's frames
        z = pooled.reshape(n, pooled.shape[1], 16, -1)
        emb = self.gait_net.FCs(z.mean(-1) + z.max(-1).values)
        if trace is not None:
            per_seq = lambda t: t.view(n, s, *t.shape[1:]).transpose(1, 2)
            trace.update({"pos_embed_interp": self.backbone.position(rows, cols), "dino_patchtokens": last,
                          "dino_patchtokens_mid4": mid, "foreground": fg.view(f, mh, mw),
                          "denoising": per_seq(den), "appearance": per_seq(app), "embedding": emb})
        return emb


# ------------------------------------------------------------- models


# ---------------------------------------------------------------- SapiensID
#
# SapiensID (mk-minchul/sapiensid, `tasks/sapiensID/src/models/sapiens_id`)
# in eval mode, computed as Osprey's port (libs/osprey-models/src/sapiensid.rs,
# whose module documentation describes the network step by step) and the
# reference fixture compute it: one sample at a time (every foreground patch
# kept), then the two flattening layers over the batch. The box and grid
# arithmetic that decides which patches exist is done on the host in float32
# in the port's order of operations (numpy scalars and arrays of float32);
# the resampling itself is torch's `grid_sample`, as upstream does it.

SAP_INPUT = 384  # side of the square input, pixels
SAP_PATCH = 32  # side of a patch
SAP_GRID = SAP_INPUT // SAP_PATCH  # patches per side of a view
SAP_PATCHES = SAP_GRID * SAP_GRID
SAP_LEVELS = 3  # views: whole image, body box, face box
# The model's 19 keypoints from the 22 given (17 COCO, then left eye, right
# eye, nose, left and right mouth corners): face nose, eyes, mouth corners,
# the ears, then COCO shoulders to ankles.
SAP_KP19_FROM_22 = [19, 17, 18, 20, 21, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]
SAP_KEYPOINTS = 19
SAP_QUERIES_PER_KEYPOINT = 4
SAP_QUERIES = SAP_KEYPOINTS * SAP_QUERIES_PER_KEYPOINT
SAP_PARTS = 2 * SAP_QUERIES  # pooled and selected features per query
SAP_KP_CHANNELS, SAP_KP_HIDDEN = 32, 512  # KP-RPE's NonlinearMappingNetwork
SAP_RPE_RATIO = 1.9
SAP_RPE_MAX_OFFSET = 3  # floor(beta) = floor(3.8)
SAP_SPATIAL_BUCKETS = (2 * SAP_RPE_MAX_OFFSET + 1) ** 2
SAP_BUCKETS = SAP_SPATIAL_BUCKETS + 1  # one more for the class and mask tokens
SAP_BUCKET_GRID = 14
SAP_INVALID_REL = -2.0  # relative keypoint embedding of a missing point or extra token
SAP_BOX_PADDING = np.float32(0.3)
SAP_SIZES = {"base": (512, 4096, 24, 16)}  # emb_dim, output_dim, depth, heads
f32 = np.float32
SAP_NO_BOX = [f32(-1)] * 4


def sap_present(p):
    return p[0] != -1 and p[1] != -1


def sap_extent(points):
    lo, hi, n = [f32(np.inf)] * 2, [f32(-np.inf)] * 2, 0
    for p in points:
        if sap_present(p):
            n += 1
            lo = [min(lo[a], p[a]) for a in range(2)]
            hi = [max(hi[a], p[a]) for a in range(2)]
    return lo, hi, n


def sap_square_box(c, half):
    return [max(c[0] - half, f32(0)), max(c[1] - half, f32(0)), min(c[0] + half, f32(1)), min(c[1] + half, f32(1))]


def sap_face_box(face5):
    """Square head box around the nose, eyes and mouth corners (>= 2 present),
    padded 30 %; face5[0] is the nose."""
    lo, hi, n = sap_extent(face5)
    if n < 2:
        return SAP_NO_BOX
    two = f32(2)
    c = [(lo[0] + hi[0]) / two, (lo[1] + hi[1]) / two]
    if sap_present(face5[0]):
        c = [(c[0] + face5[0][0]) / two, (c[1] + face5[0][1]) / two]
    far = f32(-1)
    for p in face5:
        if sap_present(p):
            dx, dy = p[0] - c[0], p[1] - c[1]
            far = max(far, np.sqrt(dx * dx + dy * dy))
    return sap_square_box(c, far * two * (f32(1) + SAP_BOX_PADDING) / two)


def sap_body_box(upper9):
    """Square box around the first nine points (>= 3 present, one a shoulder), padded 30 %."""
    lo, hi, n = sap_extent(upper9)
    if n < 3 or not (sap_present(upper9[7]) or sap_present(upper9[8])):
        return SAP_NO_BOX
    two = f32(2)
    c = [(lo[0] + hi[0]) / two, (lo[1] + hi[1]) / two]
    size = max(hi[0] - lo[0], hi[1] - lo[1])
    return sap_square_box(c, size * (f32(1) + SAP_BOX_PADDING) / two)


def sap_snap(b):
    n = f32(SAP_GRID)
    s = [np.floor(b[0] * n), np.floor(b[1] * n), np.ceil(b[2] * n), np.ceil(b[3] * n)]
    return [min(max(v / n, f32(0)), f32(1)) for v in s]


def sap_body_span(body):
    g = lambda v: f32(1) if v == 0 else v
    return g(body[2] - body[0]), g(body[3] - body[1])


def sap_clamp01(b):
    return [min(max(v, f32(0)), f32(1)) for v in b]


def sap_boxes(kp19):
    """[whole, body, face] boxes of one sample: the face box is snapped to the
    body box's own patch grid (a missing box ends up [0, 0, 0, 0])."""
    face = sap_face_box(kp19[:5])
    body = sap_snap(sap_body_box(kp19[:9]))
    w, h = sap_body_span(body)
    inside = sap_clamp01([(face[0] - body[0]) / w, (face[1] - body[1]) / h, (face[2] - body[0]) / w, (face[3] - body[1]) / h])
    s = sap_snap(inside)
    face = sap_clamp01([s[0] * w + body[0], s[1] * h + body[1], s[2] * w + body[0], s[3] * h + body[1]])
    return [[f32(0), f32(0), f32(1), f32(1)], body, face]


def sap_linspace_pm1(steps):
    """torch.linspace(-1, 1, steps)'s scalar formula in float32."""
    step = f32(2) / f32(steps - 1)
    i = np.arange(steps)
    first = f32(-1) + step * i.astype(np.float32)
    second = f32(1) - step * (steps - 1 - i).astype(np.float32)
    return np.where(i < steps // 2, first, second).astype(np.float32)


def sap_grid_axis(lo, hi, steps):
    """Normalised grid coordinates ([-1, 1] spans the image) sampling [lo, hi]."""
    two = f32(2)
    centre, width = (lo + hi) / two, hi - lo
    return ((sap_linspace_pm1(steps) * width / two + centre) * two - f32(1)).astype(np.float32)


def sap_views(boxes):
    """Per view: its sampling grid (normalised, [384, 384, 2] as (x, y)) and
    which of its 144 patches are foreground (more than half the nearest-sampled
    importance map at the view's own level: 2 in the face box, 1 in the body
    box, 0 elsewhere)."""
    size = f32(SAP_INPUT)
    p = np.arange(SAP_INPUT, dtype=np.float32)
    level = np.zeros((SAP_INPUT, SAP_INPUT), np.uint8)
    for l in (1, 2):
        b = boxes[l]
        cx = (p + f32(1) > b[0] * size) & (p < b[2] * size)
        cy = (p + f32(1) > b[1] * size) & (p < b[3] * size)
        level = np.maximum(level, np.where(cy[:, None] & cx[None, :], l, 0).astype(np.uint8))
    views = []
    half = f32(SAP_INPUT / 2)
    for l, b in enumerate(boxes):
        gy, gx = sap_grid_axis(b[1], b[3], SAP_INPUT), sap_grid_axis(b[0], b[2], SAP_INPUT)
        # Nearest pixel, corners not aligned: (g + 1) * size/2 - 0.5, rounded half to even.
        ny = np.rint((gy + f32(1)) * half - f32(0.5))
        nx = np.rint((gx + f32(1)) * half - f32(0.5))
        oky, okx = (ny >= 0) & (ny < SAP_INPUT), (nx >= 0) & (nx < SAP_INPUT)
        sampled = level[np.clip(ny, 0, SAP_INPUT - 1).astype(np.int64)][:, np.clip(nx, 0, SAP_INPUT - 1).astype(np.int64)]
        sampled = np.where(oky[:, None] & okx[None, :], sampled, 0)  # zero padding outside the image
        hit = sampled == l
        count = hit.reshape(SAP_GRID, SAP_PATCH, SAP_GRID, SAP_PATCH).sum((1, 3)).reshape(-1)
        grid = np.stack(np.broadcast_arrays(gx[None, :], gy[:, None]), -1)
        views.append((grid, 2 * count > SAP_PATCH * SAP_PATCH))
    return views


def sap_piecewise(x, alpha, beta, gamma):
    """iRPE's piecewise index of an integer offset (float64, as the port)."""
    a = abs(x)
    if a <= alpha:
        return x
    c = alpha + math.log(a / alpha) / math.log(gamma / alpha) * (beta - alpha)
    return int(math.copysign(min(round(c), beta), x))  # round: half to even; int(): toward zero


def sap_bucket_table():
    """Bucket [144, 144] of (query cell, key cell): each 12x12 cell mapped onto
    the 14x14 bucket grid, product method, the bucket's row part from the
    column offset (upstream samples its table with (row, col) as (x, y))."""
    alpha, beta, gamma = SAP_RPE_RATIO, 2 * SAP_RPE_RATIO, 8 * SAP_RPE_RATIO
    cell = [int(np.rint(((f32(v) / f32(SAP_GRID - 1)) * f32(2) - f32(1) + f32(1)) * f32((SAP_BUCKET_GRID - 1) / 2)))
            for v in range(SAP_GRID)]
    axis = {d: sap_piecewise(d, alpha, beta, gamma) + SAP_RPE_MAX_OFFSET for d in range(-13, 14)}
    rc = [(cell[i // SAP_GRID], cell[i % SAP_GRID]) for i in range(SAP_PATCHES)]
    t = [[axis[ci - cj] * (2 * SAP_RPE_MAX_OFFSET + 1) + axis[ri - rj] for (rj, cj) in rc] for (ri, ci) in rc]
    return torch.tensor(t, dtype=torch.long)


class KprpeAttention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, bias):
        n, l, e = x.shape
        q, k, v = self.qkv(x).reshape(n, l, 3, self.heads, e // self.heads).permute(2, 0, 3, 1, 4)
        return self.proj(F.scaled_dot_product_attention(q, k, v, attn_mask=bias).transpose(1, 2).reshape(n, l, e))


class KprpeMlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.relu6(self.fc1(x)))


class KprpeBlock(nn.Module):
    """CVLface's pre-norm ViT block: qkv without bias, ReLU6 MLP."""

    def __init__(self, dim, heads, mlp_ratio=3.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = KprpeAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = KprpeMlp(dim, int(dim * mlp_ratio))

    def forward(self, x, bias):
        x = x + self.attn(self.norm1(x), bias)
        return x + self.mlp(self.norm2(x))


class SapBackbone(nn.Module):
    def __init__(self, dim, depth, heads):
        super().__init__()
        self.pos_embed = nn.Parameter(torch.zeros(1, SAP_PATCHES + 1, dim))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = nn.ModuleList(KprpeBlock(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)


class KeypointMapping(nn.Module):
    """KP-RPE's NonlinearMappingNetwork: [L, 19, E] -> [L, depth * H * 50]."""

    def __init__(self, dim, out):
        super().__init__()
        self.linear1 = nn.Linear(dim, SAP_KP_CHANNELS)
        self.fc = nn.Sequential(nn.Linear(SAP_KEYPOINTS * SAP_KP_CHANNELS, SAP_KP_HIDDEN), nn.ReLU(),
                                nn.Linear(SAP_KP_HIDDEN, out))

    def forward(self, rel):
        return self.fc(self.linear1(rel).flatten(1))


class DiffAttention(nn.Module):
    """One-head differential attention (bias-free projections, lambda
    re-parameterised from four vectors, RMSNorm without gain)."""

    def __init__(self, dim):
        super().__init__()
        for name in ("lambda_q1", "lambda_k1", "lambda_q2", "lambda_k2"):
            setattr(self, name, nn.Parameter(torch.zeros(dim // 2).normal_(0, 0.1)))
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            setattr(self, name, nn.Linear(dim, dim, bias=False))
        self.lambda_init = 0.8 - 0.6 * math.exp(-0.3 * 1)  # head depth 1

    def forward(self, queries, keys, values):
        e = queries.shape[-1]
        half = e // 2
        q = (self.q_proj(queries) * half**-0.5).reshape(-1, 2, half).transpose(0, 1)  # [2, 76, E/2]
        k = self.k_proj(keys).reshape(-1, 2, half).transpose(0, 1)  # [2, n, E/2]
        v = self.v_proj(values)
        a = (q @ k.transpose(1, 2)).softmax(-1)  # [2, 76, n]
        lam = (torch.exp((self.lambda_q1 * self.lambda_k1).sum()) - torch.exp((self.lambda_q2 * self.lambda_k2).sum())
               + self.lambda_init)
        pooled = (a[0] - lam * a[1]) @ v
        pooled = pooled * torch.rsqrt(pooled.pow(2).mean(-1, keepdim=True) + 1e-5) * (1 - self.lambda_init)
        return self.out_proj(pooled)


class SemanticHead(nn.Module):
    def __init__(self, dim, out):
        super().__init__()
        self.query_pos_emb = nn.Parameter(torch.zeros(1, SAP_QUERIES, dim))
        self.learned_mask = nn.Parameter(torch.zeros(1, SAP_PARTS))
        self.attn = DiffAttention(dim)
        self.flatten_feature = nn.Sequential(
            nn.Linear(SAP_PARTS * dim, out, bias=False), nn.BatchNorm1d(out, eps=2e-5),
            nn.Linear(out, out, bias=False), nn.BatchNorm1d(out, eps=2e-5))

    def features(self, x, pos, kp_embs, present):
        """The 152 scaled part features [152 E] of one sample: tokens x [n, E],
        their position embeddings pos [n, E], keypoint embeddings [19, E]."""
        keep = present.float().repeat_interleave(SAP_QUERIES_PER_KEYPOINT)[:, None]
        queries = kp_embs.repeat_interleave(SAP_QUERIES_PER_KEYPOINT, 0) + self.query_pos_emb[0]
        pooled = self.attn(queries, pos, x) * keep
        best = (F.normalize(queries, dim=-1) @ F.normalize(pos, dim=-1).T).argmax(-1)  # first maximum
        selected = x[best] * keep
        return (torch.cat([pooled, selected]) * torch.sigmoid(self.learned_mask[0])[:, None]).flatten()


class SapiensIdNet(nn.Module):
    def __init__(self, dim, out, depth, heads):
        super().__init__()
        self.dim, self.depth, self.heads = dim, depth, heads
        self.mask_token = nn.Parameter(torch.zeros(1, dim))
        self.backbone = SapBackbone(dim, depth, heads)
        self.patch_embed = nn.Module()
        self.patch_embed.patch_embed = nn.Linear(3 * SAP_PATCH * SAP_PATCH, dim)
        self.rpe_module = nn.Module()
        self.rpe_module.keypoint_linear = KeypointMapping(dim, depth * heads * SAP_BUCKETS)
        self.head = SemanticHead(dim, out)
        self.register_buffer("bucket", sap_bucket_table(), persistent=False)

    def sample_features(self, image, kp22):
        """One sample: image [3, 384, 384], kp22 [22, 2] -> its head features [152 E]."""
        e, h = self.dim, self.heads
        kp = kp22.numpy().astype(np.float32)[SAP_KP19_FROM_22]
        kp19 = [[f32(x), f32(y)] for x, y in kp]
        present = torch.tensor([sap_present(p) for p in kp19])
        boxes = sap_boxes(kp19)
        views = sap_views(boxes)
        # Kept patches (view, cell), views in order.
        kept = [(l, c) for l, (_, fg) in enumerate(views) for c in np.flatnonzero(fg)]
        n = len(kept)
        if n == 0:
            raise ValueError("no foreground patch in any view")
        kept_index = torch.tensor([l * SAP_PATCHES + c for l, c in kept])
        cells = torch.tensor([c for _, c in kept])

        # Patches of the three views [432, 3072].
        grids = torch.from_numpy(np.stack([g for g, _ in views]))
        crops = F.grid_sample(image[None].expand(SAP_LEVELS, -1, -1, -1), grids, mode="bilinear", padding_mode="zeros",
                              align_corners=False)
        p = SAP_PATCH
        patches = crops.reshape(3, 3, SAP_GRID, p, SAP_GRID, p).permute(0, 2, 4, 1, 3, 5).reshape(-1, 3 * p * p)
        # Position embeddings of the views [432, E]: the 12x12 table, resampled over the body and face boxes.
        table = self.backbone.pos_embed[0, 1:].T.reshape(1, e, SAP_GRID, SAP_GRID)
        pos_grids = torch.from_numpy(np.stack([
            np.stack(np.broadcast_arrays(sap_grid_axis(b[0], b[2], SAP_GRID)[None, :],
                                         sap_grid_axis(b[1], b[3], SAP_GRID)[:, None]), -1)
            for b in boxes[1:]]))
        resampled = F.grid_sample(table.expand(2, -1, -1, -1), pos_grids, mode="bilinear", padding_mode="zeros",
                                  align_corners=False)
        positions = torch.cat([table, resampled]).flatten(2).transpose(1, 2).reshape(-1, e)
        pos = positions[kept_index]
        # Keypoint embeddings [19, E]: the table at each point, corners aligned (a missing point: zeros).
        kp_embs = F.grid_sample(table, torch.from_numpy(kp * 2 - 1)[None, None], mode="bilinear",
                                padding_mode="zeros", align_corners=True)[0, :, 0].T

        cls = self.backbone.cls_token[0] + self.backbone.pos_embed[0, :1]
        tokens = self.patch_embed.patch_embed(patches[kept_index]) + pos
        x = torch.cat([cls, tokens, self.mask_token])[None]

        # KP-RPE: per token and keypoint, position minus keypoint embedding
        # (-2 for a missing keypoint and for the class and mask tokens).
        rel = torch.where(present[None, :, None], pos[:, None] - kp_embs[None], SAP_INVALID_REL)
        none = torch.full((1, SAP_KEYPOINTS, e), SAP_INVALID_REL)
        tables = self.rpe_module.keypoint_linear(torch.cat([none, rel, none]))  # [L, depth * H * 50]
        l = n + 2
        index = torch.full((l, l), SAP_SPATIAL_BUCKETS, dtype=torch.long)
        index[1:-1, 1:-1] = self.bucket[cells][:, cells]
        index = index.expand(h, l, l)
        key_bias = torch.zeros(l)
        key_bias[-1] = math.log(max(SAP_LEVELS * SAP_PATCHES - n, 1))  # the mask token stands for the patches not kept
        tables = tables.reshape(l, self.depth, h, SAP_BUCKETS).permute(1, 2, 0, 3)  # [depth, H, L, 50]
        for d, block in enumerate(self.backbone.blocks):
            x = block(x, (torch.gather(tables[d], 2, index) + key_bias)[None])
        x = self.backbone.norm(x)[0, 1:n + 1]  # drop the mask token, then the class token
        return self.head.features(x, pos, kp_embs, present)

    def forward(self, images, keypoints22):
        feats = torch.stack([self.sample_features(images[i], keypoints22[i]) for i in range(len(images))])
        return self.head.flatten_feature(feats)


class SapiensId(nn.Module):
    """Input: images [B, 3, 384, 384] ((v - 0.5) / 0.5, RGB, white
    square-padded crop) and keypoints [B, 22, 2] in [0, 1] ((-1, -1): missing).
    Output: the raw embedding [B, output_dim]. Names under `net.`, as the
    published checkpoint stores them."""

    def __init__(self, size="base", cfg=None):
        super().__init__()
        self.net = SapiensIdNet(*(cfg or SAP_SIZES[size]))

    def forward(self, images, keypoints22):
        return self.net(images, keypoints22)


def tiny_sapiensid(fixtures):
    t = json.load(open(f"{fixtures}/sapiensid_tiny.config.json"))["tiny"]
    return SapiensId(cfg=(t["emb_dim"], t["output_dim"], t["depth"], t["num_heads"]))


def sapiensid_square_input(crop):
    """Upstream's test transform of one PIL RGB crop: [0, 1] floats, padded to
    a square with white (the odd pixel right/bottom), bilinear resize to 384
    without antialiasing, (v - 0.5) / 0.5. [3, 384, 384]."""
    x = torch.from_numpy(np.asarray(crop, dtype=np.float32) / np.float32(255)).permute(2, 0, 1)
    h, w = x.shape[1:]
    side = max(h, w)
    left, top = (side - w) // 2, (side - h) // 2
    x = F.pad(x, (left, side - w - left, top, side - h - top), value=1.0)
    x = F.interpolate(x[None], size=(SAP_INPUT, SAP_INPUT), mode="bilinear", align_corners=False, antialias=False)[0]
    return (x - 0.5) / 0.5


MODELS = {
    # id: (input kind, full-size builder, fixture stem)
    "osnet-x1_0": ("body", lambda: OsNet(ain=False), "osnet_x1_0"),
    "osnet-ain-x1_0": ("body", lambda: OsNet(ain=True), "osnet_ain_x1_0"),
    "clip3dreid": ("body", Clip3dReid, "clip3dreid"),
    "gaitbase": ("gait", GaitBase, "gaitbase"),
    "biggait": ("gait-rgb", BigGait, "biggait"),
    "sapiensid": ("body-keypoints", SapiensId, "sapiensid"),
}
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
# Body models' test transforms: (height, width) of the stretched crop, mean, std.
BODY_INPUT = {
    "osnet-x1_0": ((256, 128), IMAGENET_MEAN, IMAGENET_STD),
    "osnet-ain-x1_0": ((256, 128), IMAGENET_MEAN, IMAGENET_STD),
    "clip3dreid": ((224, 224), CLIP_MEAN, CLIP_STD),
}


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


def tiny_clip3dreid(fixtures):
    t = json.load(open(f"{fixtures}/clip3dreid_tiny.config.json"))["tiny"]
    keys = ["embed_dims", "depths", "num_heads", "window_sizes", "mlp_ratio", "num_classes"]
    return Clip3dReid({k: t[k] for k in keys})


def tiny_biggait(fixtures):
    t = json.load(open(f"{fixtures}/biggait_tiny.config.json"))["tiny"]
    d, m = t["dinov2"], t["model_cfg"]
    return BigGait({
        "dino": {"dim": d["embed_dim"], "depth": d["depth"], "heads": d["num_heads"], "patch": d["patch_size"],
                 "img_size": d["img_size"], "mlp_ratio": d["mlp_ratio"]},
        "image_size": m["image_size"], "sils_size": m["sils_size"],
        "denoising_dim": m["Denoising_Branch"]["target_dim"], "appearance_dim": m["Appearance_Branch"]["target_dim"],
        "channels": m["backbone_cfg"]["channels"], "squeeze_ratio": m["AttentionFusion"]["squeeze_ratio"],
        "fc_out": m["SeparateFCs"]["out_channels"], "classes": m["SeparateBNNecks"]["class_num"],
    })


def self_check(fixtures, models):
    """Each definition against the published manifest (full size) and the
    upstream reference outputs (the fixtures' configuration)."""
    from safetensors.torch import load_file

    report = {}
    for model_id in models:
        kind, build, stem = MODELS[model_id]
        keys = {"clip3dreid": f"{fixtures}/clip3dreid_full.keys.json", "biggait": f"{fixtures}/biggait_full.keys.json",
                "sapiensid": f"{fixtures}/sapiensid_base.keys.json"}.get(model_id, f"{fixtures}/{stem}.keys.json")
        report[f"{model_id}_manifest"] = f"{manifest_check(build(), keys)} tensors match"
        with torch.inference_mode():
            if model_id == "clip3dreid":
                net = load_weights(tiny_clip3dreid(fixtures), f"{fixtures}/clip3dreid_tiny.weights.f16.safetensors")
                io = load_file(f"{fixtures}/clip3dreid_tiny.io.safetensors")
                mean, std = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), torch.tensor(CLIP_STD).view(1, 3, 1, 1)
                report["clip3dreid_input_rel_err"] = rel_err((io["image_u8"].float() / 255 - mean) / std, io["image"])
                g, local = net.forward_feature(io["image"])
                report["clip3dreid_global_rel_err"] = rel_err(g, io["global_feature"])
                report["clip3dreid_local_rel_err"] = rel_err(local, io["local_feature"])
                report["clip3dreid_global_flip_rel_err"] = rel_err(net.forward_feature(io["image"].flip(3))[0],
                                                                  io["global_feature_flip"])
                report["clip3dreid_embedding_rel_err"] = rel_err(net(io["image"]), io["embedding"])
            elif model_id == "biggait":
                net = load_weights(tiny_biggait(fixtures), f"{fixtures}/biggait_tiny.weights.safetensors")
                io = load_file(f"{fixtures}/biggait_tiny.io.safetensors")
                trace = {}
                net(io["frames_u8"], io["ratios"], trace)
                for k, v in trace.items():
                    report[f"biggait_{k}_rel_err"] = rel_err(v, io[k])
            elif model_id == "sapiensid":
                net = load_weights(tiny_sapiensid(fixtures), f"{fixtures}/sapiensid_tiny.weights.safetensors")
                io = load_file(f"{fixtures}/sapiensid_tiny.io.safetensors")
                got = net(io["image"], io["keypoints22"])
                for i in range(len(got)):  # sample 1: a face close-up without body keypoints
                    report[f"sapiensid_sample{i}_embedding_rel_err"] = rel_err(got[i], io["embedding"][i])
            elif kind == "body":
                net = load_weights(build(), f"{fixtures}/{stem}.weights.f16.safetensors")
                io = load_file(f"{fixtures}/{stem}.io.safetensors")
                report[f"{model_id}_feature_rel_err"] = rel_err(net(io["image"]), io["feature"])
                report[f"{model_id}_featuremap_rel_err"] = rel_err(net.featuremap(io["image"]), io["featuremap"])
            else:
                net = load_weights(build(), f"{fixtures}/{stem}.weights.f16.safetensors")
                io = load_file(f"{fixtures}/{stem}.io.safetensors")
                report[f"{model_id}_embedding_rel_err"] = rel_err(net(io["silhouettes"]), io["embedding"])
    worst = max(v for k, v in report.items() if k.endswith("rel_err"))
    if worst > 1e-4:
        sys.exit(f"self-check failed: {report}")
    return report


# ------------------------------------------------ random full-size weights


def random_weights(net, seed):
    """Seeded random values for every parameter of a full-size definition
    (for timing and parity only: they recognise nobody). Scales keep the
    signal alive through depth: weights N(0, 1/fan_in), norms' gains near 1,
    DINOv2's LayerScale 0.1-0.5, attention biases N(0, 1); BigGait's mask
    logits are scaled up so few probabilities sit near 0.5, where rounding
    decides the foreground; SapiensID's query embeddings N(0, 0.5), part
    gates N(0, 1) before their sigmoid, lambda vectors N(0, 0.1) (upstream's
    initialisation)."""
    g = torch.Generator().manual_seed(seed)
    normal = lambda t, std, mean=0.0: t.copy_(torch.randn(t.shape, generator=g) * std + mean)
    with torch.no_grad():
        for name, m in net.named_modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.InstanceNorm2d)):
                if getattr(m, "weight", None) is not None:
                    normal(m.weight, 0.1, 1.0)
                    normal(m.bias, 0.1)
            elif isinstance(m, (nn.Linear, nn.Conv2d)):
                fan_in = m.weight[0].numel()
                normal(m.weight, fan_in**-0.5 * (8.0 if name == "Mask_Branch.down_sampling" else 1.0))
                if m.bias is not None:
                    normal(m.bias, 0.02)
        for name, p in net.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "attention_biases" or name == "student_encoder.proj":
                normal(p, 1.0)
            elif leaf in ("pos_embed", "cls_token", "mask_token", "query_pos_emb"):
                normal(p, 0.5)
            elif leaf == "learned_mask":
                normal(p, 1.0)
            elif leaf.startswith("lambda_"):
                normal(p, 0.1)
            elif leaf == "gamma":
                p.copy_(0.1 + 0.4 * torch.rand(p.shape, generator=g))
            elif leaf == "fc_bin":
                normal(p, p.shape[1] ** -0.5)
    return net


def calibrate(net, run):
    """BatchNorm running statistics from the batch statistics of one pass
    over real inputs (`run()` in train mode), so eval-mode activations stay
    in range as in a trained network."""
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: one pass sets the statistics
    net.train()
    with torch.no_grad():
        run()
    return net.eval()


def make_weights(model_id, out, seed, inputs, threads):
    """Writes seeded random full-size weights of `model_id` (published names,
    float32 safetensors) with BatchNorm statistics calibrated on `inputs`.
    SapiensID needs no calibration: its two BatchNorms follow linears fed by
    RMS- and Layer-normalised features, so the default statistics (mean 0,
    variance 1) keep their outputs O(1)."""
    from safetensors.torch import save_file

    kind, build, _ = MODELS[model_id]
    net = random_weights(build(), seed)
    if kind == "body-keypoints":
        run = None
    elif kind == "body":
        run = body_fn(net, model_id, body_inputs(inputs, len(expand_files(inputs))))
    elif kind == "gait-rgb":
        seqs = rgb_inputs(inputs)
        k = min(8, *(len(s) for s in seqs))  # equal lengths: one batch of sequences
        seqs = [s[:k] for s in seqs]
        run = rgb_fn(net, seqs, threads, batched=True)
    else:
        sys.exit(f"{model_id}: its weights come from the seed fixtures")
    if run is not None:
        calibrate(net, run)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, out)
    return sum(p.numel() for p in net.parameters())


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


# Walking clips of All-in-One-Gait's history_Inputvideos (720x1280, 30 fps)
# and the first frame of each benchmark sequence: the walker crossing the
# view whole (demo1 outdoors, demo2 the same person indoors, demo3 another
# person close up).
WALKER_CLIPS = [("demo1", 40), ("demo2", 40), ("demo3", 40)]


def write_walkers(data, out, frames, models_dir):
    """RGB person-crop sequences for BigGait: `frames` consecutive frames of
    each clip in WALKER_CLIPS, the walker found by Osprey's CenterNet person
    detector run in the TF.js runtime (tfjs-reference/person_detections.mjs),
    the best box of each frame (the one overlapping the previous frame's box
    most, after the first), cut from the frame and written as PNG, one folder
    per sequence."""
    import subprocess
    import tempfile

    import cv2

    out = Path(out)
    script = HERE / "tfjs-reference/person_detections.mjs"
    written = []
    for clip, start in WALKER_CLIPS:
        cap = cv2.VideoCapture(str(Path(data) / "All-in-One-Gait/history_Inputvideos" / f"{clip}.mp4"))
        bgr = []
        for i in range(start + frames):
            ok, f = cap.read()
            if not ok:
                sys.exit(f"{clip}.mp4 ends before frame {start + frames}")
            if i >= start:
                bgr.append(f)
        h, w = bgr[0].shape[:2]
        with tempfile.TemporaryDirectory() as tmp:
            raw, mot = Path(tmp) / "frames.rgb", Path(tmp) / "boxes.txt"
            np.stack([cv2.cvtColor(f, cv2.COLOR_BGR2RGB) for f in bgr]).tofile(raw)
            subprocess.run(["node", str(script), "--detector", "centernet", "--model", str(Path(models_dir) / "centernet"),
                            "--frames", str(raw), "--width", str(w), "--height", str(h), "--out", str(mot),
                            "--input", "512", "--min-score", "0.3"], check=True, stdout=subprocess.DEVNULL)
            rows = [list(map(float, line.split(",")[:7])) for line in open(mot) if line.strip()]
        seq = out / clip
        seq.mkdir(parents=True, exist_ok=True)
        prev = None
        for i, f in enumerate(bgr):
            boxes = [r[2:7] for r in rows if int(r[0]) == i]
            if not boxes:
                sys.exit(f"{clip}: no person found in frame {start + i}")
            best = max(boxes, key=(lambda b: iou(b, prev)) if prev else (lambda b: b[4]))
            x, y, bw, bh = best[:4]
            x0, y0, x1, y1 = int(x), int(y), min(w, int(np.ceil(x + bw))), min(h, int(np.ceil(y + bh)))
            cv2.imwrite(str(seq / f"{i:03d}.png"), f[y0:y1, x0:x1])
            prev = best
        written.append(seq)
    return written


def iou(a, b):
    """IoU of two (x, y, w, h) boxes."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def expand_files(paths):
    files = []
    for p in map(Path, paths):
        files += sorted(f for f in p.iterdir() if f.suffix.lower() in (".png", ".jpg", ".jpeg")) if p.is_dir() else [p]
    return files


def body_inputs(paths, batch):
    """Decoded RGB crops, the named files (folders: their images by name)
    repeated in order to `batch`."""
    from PIL import Image

    files = expand_files(paths)
    if not files:
        sys.exit("no crops")
    return [Image.open(files[i % len(files)]).convert("RGB") for i in range(batch)]


def gait_inputs(folders):
    """Per sequence folder: its silhouettes by file name, decoded as OpenGait's
    pretreatment reads them (cv2.IMREAD_GRAYSCALE)."""
    import cv2

    seqs = []
    for d in map(Path, folders):
        files = expand_files([d])
        if not files:
            sys.exit(f"{d}: no silhouettes")
        seqs.append([cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) for f in files])
    return seqs


def rgb_inputs(folders):
    """Per sequence folder: its RGB person crops by file name, decoded as
    OpenGait's pretreatment_rgb reads them (cv2.imread: BGR)."""
    import cv2

    seqs = []
    for d in map(Path, folders):
        files = expand_files([d])
        if not files:
            sys.exit(f"{d}: no frames")
        seqs.append([cv2.imread(str(f), cv2.IMREAD_COLOR) for f in files])
    return seqs


def body_fn(net, model_id, crops):
    from torchvision import transforms as T

    # The authors' test transform: Resize (PIL bilinear, aspect not kept), ToTensor, Normalize.
    size, mean, std = BODY_INPUT[model_id]
    transform = T.Compose([T.Resize(size), T.ToTensor(), T.Normalize(mean, std)])

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


def pretreat_rgb(bgr, height=256, width=128):
    """OpenGait's datasets/pretreatment_rgb.py for one crop: cv2.resize
    (INTER_LINEAR) to `height` keeping the aspect (new width truncated),
    centre zero-pad or centre-crop the width to `width`, BGR -> RGB, as
    [3, height, width] u8; and the ratio width / height of the crop."""
    import cv2

    h, w = bgr.shape[:2]
    resized = cv2.resize(bgr, (int(w * height / h), height))
    off = (width - resized.shape[1]) // 2
    if off < 0:
        framed = resized[:, -off:-off + width]
    else:
        framed = np.zeros((height, width, 3), np.uint8)
        framed[:, off:off + resized.shape[1]] = resized
    return cv2.cvtColor(framed, cv2.COLOR_BGR2RGB).transpose(2, 0, 1), w / h


def rgb_fn(net, seqs, threads, batched=False):
    """BigGait: each crop through pretreatment_rgb, each sequence one forward
    (OpenGait's test sampler), the [256, 16] output flattened (c * 16 + p)
    and unit-normalised as Osprey stores the template. `batched`: all
    sequences (of equal length) in one forward, for calibration."""
    import cv2

    cv2.setNumThreads(threads)
    # OpenCV's own bilinear code (the walker crops give the same bytes with IPP on).
    cv2.ipp.setUseIPP(False)

    def prepare(frames):
        pairs = [pretreat_rgb(f) for f in frames]
        x = torch.from_numpy(np.stack([p[0] for p in pairs])).unsqueeze(0)  # [1, s, 3, 256, 128] u8
        # The ratios are float64 in the pickle; the loader hands the model float32.
        return x, torch.tensor([[p[1] for p in pairs]], dtype=torch.float32)

    def run():
        if batched:
            xs, rs = zip(*(prepare(f) for f in seqs))
            return net(torch.cat(xs), torch.cat(rs)), None
        out, kept = [], []
        for frames in seqs:
            x, ratios = prepare(frames)
            out.append(F.normalize(net(x, ratios).reshape(1, -1), dim=1))
            kept.append(len(frames))
        return torch.cat(out), torch.tensor(kept, dtype=torch.float32)

    return run


def prepared_inputs(path, batch):
    """SapiensID's network inputs as Osprey prepared them (`osprey bench
    person-model --model sapiensid --save-inputs FILE`): `image` [U, 3, 384,
    384] and `keypoints` [U, 22, 2] of U distinct crops, repeated in order to
    `batch` rows."""
    from safetensors.torch import load_file

    t = load_file(path)
    images, keypoints = t["image"].float(), t["keypoints"].float()
    if images.shape[1:] != (3, SAP_INPUT, SAP_INPUT) or keypoints.shape != (len(images), 22, 2) or not len(images):
        sys.exit(f"{path}: `image` {tuple(images.shape)} and `keypoints` {tuple(keypoints.shape)} are not "
                 f"[U, 3, {SAP_INPUT}, {SAP_INPUT}] and [U, 22, 2]")
    rows = torch.arange(batch) % len(images)
    return images[rows], keypoints[rows], len(images)


def keypoint_body_fn(net, images, keypoints):
    """SapiensID's forward on prepared inputs; unit embeddings."""

    def run():
        return F.normalize(net(images, keypoints), dim=1), None

    return run


def distinct_max_cosine(emb, unique):
    """The largest cosine between embeddings of different inputs (the first
    `unique` rows): how far apart the random weights put distinct inputs,
    against which the 0.9999 parity threshold is to be read."""
    e = F.normalize(emb[:unique], dim=1)
    c = e @ e.T - 2 * torch.eye(len(e))
    return c.max().item() if len(e) > 1 else None


# ---------------------------------------------------------------- main


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=sorted(MODELS))
    p.add_argument("--weights", help="safetensors with the published names")
    p.add_argument("--inputs", nargs="+", default=[],
                   help="body: crop files or folders; gait: silhouette sequence folders; biggait: RGB crop sequence folders")
    p.add_argument("--batch", type=int, default=32, help="body crops per pass (inputs repeated to fill it)")
    p.add_argument("--iters", type=int, default=5, help="timed passes after one warm-up; best and median reported")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (and OpenCV's)")
    p.add_argument("--save-reference", metavar="FILE", help="write the embeddings of the inputs")
    p.add_argument("--self-check", metavar="FIXTURES", help="check the definitions against shared/fixtures/seed-models")
    p.add_argument("--check-models", nargs="+", default=sorted(MODELS), metavar="MODEL",
                   help="the definitions --self-check checks (default: all)")
    p.add_argument("--write-crops", nargs=2, metavar=("DATA", "DIR"), help="write the bench crops from DATA into DIR")
    p.add_argument("--write-walkers", nargs=2, metavar=("DATA", "DIR"),
                   help="write BigGait's RGB crop sequences (one folder per clip) from DATA into DIR")
    p.add_argument("--walker-frames", type=int, default=30, help="frames per --write-walkers sequence")
    p.add_argument("--models-dir", default=str(REPO / "models"), help="Osprey's model folder (CenterNet for --write-walkers)")
    p.add_argument("--make-weights", metavar="FILE",
                   help="write seeded random full-size weights of --model (BatchNorm statistics from --inputs) to FILE")
    p.add_argument("--seed", type=int, default=15, help="seed of --make-weights")
    p.add_argument("--prepared", metavar="FILE",
                   help="sapiensid: the network inputs (images and keypoints) Osprey prepared from the crops "
                        "(`osprey bench person-model --model sapiensid --save-inputs FILE`)")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    out = {"impl": "pytorch", "torch": torch.__version__}
    if args.write_crops:
        out["crops"] = len(write_crops(*args.write_crops))
    if args.write_walkers:
        out["walker_sequences"] = len(write_walkers(*args.write_walkers, args.walker_frames, args.models_dir))
    if args.self_check:
        out["self_check"] = self_check(args.self_check, args.check_models)
    if args.make_weights:
        if not (args.model and (args.inputs or MODELS[args.model][0] == "body-keypoints")):
            sys.exit("--make-weights needs --model and --inputs")
        out["weights"] = args.make_weights
        out["parameters"] = make_weights(args.model, args.make_weights, args.seed, args.inputs, args.threads)
        out["seed"] = args.seed
        print(json.dumps(out))
        return
    if not args.model:
        print(json.dumps(out))
        return
    kind, build, _ = MODELS[args.model]
    if kind == "body-keypoints" and not (args.weights and args.prepared):
        sys.exit(f"--model {args.model} needs --weights and --prepared")
    if kind != "body-keypoints" and not (args.weights and args.inputs):
        sys.exit("--model needs --weights and --inputs")

    net = load_weights(build(), args.weights)
    frames = None
    if kind == "body-keypoints":
        images, keypoints, unique = prepared_inputs(args.prepared, args.batch)
        run = keypoint_body_fn(net, images, keypoints)
        units = args.batch
        if args.inputs:
            # Osprey's image preparation against upstream's test transform of the same crops.
            crops = body_inputs(args.inputs, unique)
            want = torch.stack([sapiensid_square_input(c) for c in crops])
            out["input_image_max_abs_diff"] = (want - images[:unique]).abs().max().item()
    elif kind == "body":
        run = body_fn(net, args.model, body_inputs(args.inputs, args.batch))
        units, unique = args.batch, min(args.batch, len(expand_files(args.inputs)))
    elif kind == "gait":
        import cv2

        cv2.setNumThreads(args.threads)
        seqs = gait_inputs(args.inputs)
        run = gait_fn(net, seqs)
        units = unique = len(seqs)
        frames = sum(len(s) for s in seqs)
    else:
        seqs = rgb_inputs(args.inputs)
        run = rgb_fn(net, seqs, args.threads)
        units = unique = len(seqs)
        frames = sum(len(s) for s in seqs)

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
            "modality": "gait" if kind.startswith("gait") else "body",
            "batch": units,
            "threads": torch.get_num_threads(),
            "iters": len(times),
            "best_s": best,
            "median_s": median,
            "embeddings_per_s": units / best,
            "median_embeddings_per_s": units / median,
            "distinct_max_cosine": distinct_max_cosine(emb, unique),
        }
    )
    if frames is not None:
        out.update({"frames": frames, "frames_kept": int(kept.sum()), "frames_per_s": frames / best,
                    "median_frames_per_s": frames / median})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
