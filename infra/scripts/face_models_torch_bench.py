#!/usr/bin/env python3
"""PyTorch (CPU) reference timing for `osprey bench face-model`.

Our own PyTorch definitions of the two seed face recognisers Osprey ports,
with the parameter names of the published checkpoints (the manifests in
shared/fixtures/seed-models/*.keys.json):

* AdaFace IR-18/50/101 (AdaFace's `net.py` layout): conv3x3 · BN · PReLU stem,
  basic IR blocks (BN · conv3x3 · BN · PReLU · conv3x3(stride) · BN, shortcut a
  strided 1x1 max-pool or conv1x1 · BN), output BN2d · dropout · flatten ·
  Linear(512·7·7 → 512) · BN1d(affine=False); input BGR.
* CVLface ViT + KP-RPE small/base: 8x8 patches, no class token, learned
  position embedding, pre-norm blocks (qkv without bias, ReLU6 MLP), KP-RPE
  (one `keypoint_linear` maps the patch-centre-to-landmark offsets to a
  per-block, per-head table of 49 buckets, gathered into the attention
  logits by the grid offset between query and key), final LayerNorm,
  flatten, Linear → BN1d → Linear → BN1d; input RGB plus 5 landmarks.

Weights are random (speed does not depend on their values), the model is in
eval mode, runs under `torch.inference_mode()` on `--threads` threads, and is
timed like Osprey's side: one warm-up, then `--iters` timed passes over one
batch of `--batch` 112x112 crops (u8 pixels in, unit embeddings out), best
and median reported as one JSON line.

The batch is the same deterministic pseudo-random crops (and jittered
template landmarks) that `osprey bench face-model` builds, so:

* `--save-weights F` writes the random weights as safetensors under the
  published names (ViT: with CVLface's `net.` prefix) for
  `osprey bench face-model --weights F`;
* `--save-reference F` writes this model's unit embeddings and norms of that
  batch for `osprey bench face-model --reference F`, which fails unless every
  embedding has cosine > 0.9999 with this one: both sides computed the same
  function before their speeds are compared.

`--self-check DIR` (DIR = shared/fixtures/seed-models) first checks these
definitions against the upstream reference fixtures (AdaFace IR-18 and
ViT-KPRPE tiny outputs computed by the authors' own code) and the
published manifests' names and shapes.
"""

import argparse
import json
import math
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

SIDE = 112
# The ArcFace 5-point template (112x112 crop pixels), as osprey_models::align.
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)


# ---------------------------------------------------------------- AdaFace IR


IR_STAGES = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 14, 3], 100: [3, 13, 30, 3], 101: [3, 13, 30, 3]}


class BasicBlockIR(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        if cin == cout:
            self.shortcut_layer = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(cin),
            nn.Conv2d(cin, cout, 3, 1, 1, bias=False),
            nn.BatchNorm2d(cout),
            nn.PReLU(cout),
            nn.Conv2d(cout, cout, 3, stride, 1, bias=False),
            nn.BatchNorm2d(cout),
        )

    def forward(self, x):
        return self.res_layer(x) + self.shortcut_layer(x)


class IResNet(nn.Module):
    """Input: BGR [N, 3, 112, 112], (x/255 - 0.5)/0.5. Output: (unit feature, norm)."""

    def __init__(self, depth):
        super().__init__()
        self.input_layer = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64))
        blocks, prev = [], 64
        for width, n in zip([64, 128, 256, 512], IR_STAGES[depth]):
            blocks.append(BasicBlockIR(prev, width, 2))
            blocks.extend(BasicBlockIR(width, width, 1) for _ in range(n - 1))
            prev = width
        self.body = nn.Sequential(*blocks)
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(512),
            nn.Dropout(0.4),
            nn.Flatten(),
            nn.Linear(512 * 7 * 7, 512),
            nn.BatchNorm1d(512, affine=False),
        )

    def forward(self, x):
        x = self.output_layer(self.body(self.input_layer(x)))
        norm = torch.norm(x, 2, 1, True)
        return x / norm, norm


# ---------------------------------------------------------- ViT with KP-RPE


VIT_SIZES = {
    # embed, depth, heads, mlp_ratio, output
    "tiny": (64, 2, 4, 3.0, 64),
    "small": (512, 12, 8, 5.0, 512),
    "base": (512, 24, 16, 3.0, 512),
}


def piecewise_bucket(offset, alpha, beta, gamma):
    """iRPE's piecewise index of signed grid offsets (an integer tensor)."""
    x = offset.double()
    sign = torch.sign(x)
    absx = x.abs()
    compressed = alpha + torch.log(absx.clamp(min=1e-9) / alpha) / math.log(gamma / alpha) * (beta - alpha)
    far = (sign * torch.round(compressed).clamp(max=beta)).long()  # torch.round: half to even
    return torch.where(absx <= alpha, offset, far)


class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, rpe_bias):
        n, l, e = x.shape
        qkv = self.qkv(x).reshape(n, l, 3, self.heads, e // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=rpe_bias)
        return self.proj(out.transpose(1, 2).reshape(n, l, e))


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.relu6(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim, heads, mlp_ratio):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x, rpe_bias):
        x = x + self.attn(self.norm1(x), rpe_bias)
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, patch, dim):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch, patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class VitKprpe(nn.Module):
    """Input: RGB [N, 3, 112, 112], (x/255 - 0.5)/0.5, and landmarks [N, 5, 2]
    as (x, y) in [0, 1] crop coordinates. Output: the raw feature [N, out]."""

    def __init__(self, size, patch=8, keypoints=5, rpe_ratio=1.9):
        super().__init__()
        dim, depth, heads, mlp_ratio, out = VIT_SIZES[size]
        side = SIDE // patch
        tokens = side * side
        alpha, beta, gamma = rpe_ratio, 2 * rpe_ratio, 8 * rpe_ratio
        max_offset = int(beta)
        self.buckets = (2 * max_offset + 1) ** 2
        self.depth, self.heads, self.tokens = depth, heads, tokens
        self.patch_embed = PatchEmbed(patch, dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens, dim))
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.feature = nn.Sequential(
            nn.Linear(dim * tokens, dim, bias=False),
            nn.BatchNorm1d(dim, eps=2e-5),
            nn.Linear(dim, out, bias=False),
            nn.BatchNorm1d(out, eps=2e-5),
        )
        self.keypoint_linear = nn.Linear(2 * keypoints, depth * heads * self.buckets)
        # Token t is grid cell (t // side, t % side); centres as (x, y) in [0, 1].
        rows = torch.arange(tokens) // side
        cols = torch.arange(tokens) % side
        centres = torch.stack([(cols + 0.5) / side, (rows + 0.5) / side], 1).float()
        self.register_buffer("centres", centres, persistent=False)
        # Product-method bucket of (query i, key j): row bucket * (2 max + 1) + column bucket.
        dr = piecewise_bucket(rows[:, None] - rows[None, :], alpha, beta, gamma) + max_offset
        dc = piecewise_bucket(cols[:, None] - cols[None, :], alpha, beta, gamma) + max_offset
        self.register_buffer("bucket", dr * (2 * max_offset + 1) + dc, persistent=False)

    def forward(self, images, keypoints):
        n = images.shape[0]
        x = self.patch_embed(images) + self.pos_embed
        # Offsets patch centre - landmark, [N, L, 2K] as (dx, dy) per landmark.
        offsets = (self.centres[None, :, None, :] - keypoints[:, None, :, :]).reshape(n, self.tokens, -1)
        # [N, L, depth * H * B] -> [depth, N, H, L, B]
        tables = self.keypoint_linear(offsets).reshape(n, self.tokens, self.depth, self.heads, self.buckets)
        tables = tables.permute(2, 0, 3, 1, 4)
        index = self.bucket.expand(n, self.heads, self.tokens, self.tokens)
        for d, block in enumerate(self.blocks):
            x = block(x, torch.gather(tables[d], 3, index))
        return self.feature(self.norm(x).reshape(n, -1))


# ------------------------------------------------------------------- models


MODELS = {
    "adaface-ir18": ("ir", 18),
    "adaface-ir50": ("ir", 50),
    "adaface-ir101": ("ir", 101),
    "vit-kprpe-small": ("vit", "small"),
    "vit-kprpe-base": ("vit", "base"),
}
KEYS_FILES = {
    "adaface-ir50": "adaface_ir_50.keys.json",
    "adaface-ir101": "adaface_ir_101.keys.json",
    "vit-kprpe-small": "vit_kprpe_small.keys.json",
    "vit-kprpe-base": "vit_kprpe_base.keys.json",
}


def build(model_id):
    kind, arg = MODELS[model_id]
    return kind, (IResNet(arg) if kind == "ir" else VitKprpe(arg))


def randomise(net, seed):
    """Random but well-conditioned weights: PyTorch's default initialisation,
    then randomised norm affines and BN statistics (running_var > 0)."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            m.reset_parameters()
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm)) and m.weight is not None:
            with torch.no_grad():
                m.weight.copy_(1 + 0.4 * (torch.rand(m.weight.shape, generator=g) - 0.5))
                m.bias.copy_(0.2 * (torch.rand(m.bias.shape, generator=g) - 0.5))
        if isinstance(m, nn.PReLU):
            with torch.no_grad():
                m.weight.copy_(0.1 + 0.3 * torch.rand(m.weight.shape, generator=g))
    if isinstance(net, VitKprpe):
        with torch.no_grad():
            net.pos_embed.copy_(0.02 * torch.randn(net.pos_embed.shape, generator=g))


def calibrate(net, run):
    """Sets every BN's running statistics to those its input has on the bench
    batch (one forward in training mode, dropout off), so that activations
    neither explode nor vanish through 100 random layers; then eval mode."""
    bns = [m for m in net.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: after one batch, the batch's statistics
        m.train()
    with torch.no_grad():
        run()
    for m in bns:
        m.momentum = 0.1
    net.eval()


def bench_crops(n):
    """The deterministic pseudo-random crops of `osprey bench face-model`:
    u8 [N, 112, 112, 3] RGB, byte i (over n, y, x, c) a 32-bit hash of i."""
    i = np.arange(n * SIDE * SIDE * 3, dtype=np.uint64)
    m = np.uint64(0xFFFFFFFF)
    h = (i * np.uint64(0x9E3779B1)) & m
    h ^= h >> np.uint64(15)
    h = (h * np.uint64(0x85EBCA77)) & m
    h ^= h >> np.uint64(13)
    return (h >> np.uint64(24)).astype(np.uint8).reshape(n, SIDE, SIDE, 3)


def bench_keypoints(n):
    """The template landmarks jittered per crop by whole half pixels, in
    [0, 1] crop units (as `osprey bench face-model`)."""
    kp = np.empty((n, 5, 2), dtype=np.float32)
    for c in range(n):
        for k in range(5):
            dx = np.float32(((c * 5 + k) % 7) - 3) * np.float32(0.5)
            dy = np.float32(((c * 3 + k) % 5) - 2) * np.float32(0.5)
            kp[c, k, 0] = (ARCFACE_TEMPLATE[k, 0] + dx) / np.float32(SIDE)
            kp[c, k, 1] = (ARCFACE_TEMPLATE[k, 1] + dy) / np.float32(SIDE)
    return kp


def embed_fn(kind, net, crops_u8, keypoints):
    """Crops (u8 NHWC RGB) in, (unit embeddings, norms) out: the work Osprey's
    `FaceRecognizer::embed` does."""

    def run():
        x = crops_u8.permute(0, 3, 1, 2).float()
        if kind == "ir":
            x = x.flip(1)  # BGR
        x = (x / 255.0 - 0.5) / 0.5
        if kind == "ir":
            return net(x)
        f = net(x, keypoints)
        norm = torch.norm(f, 2, 1, True)
        return f / norm, norm

    return run


def state_dict_for_file(kind, net):
    sd = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    # The published CVLface files keep the ViT under `net.`.
    return {("net." + k if kind == "vit" else k): v for k, v in sd.items()}


# --------------------------------------------------------------- self-check


def self_check(fixtures):
    from safetensors.torch import load_file

    report = {}
    # Manifests: names and shapes of the published checkpoints.
    for model_id, keys_file in KEYS_FILES.items():
        kind, net = build(model_id)
        want = json.load(open(f"{fixtures}/{keys_file}"))
        have = {k: list(v.shape) for k, v in state_dict_for_file(kind, net).items()}
        if have != want:
            missing = sorted(set(want) - set(have))[:5]
            extra = sorted(set(have) - set(want))[:5]
            shape = [k for k in want if k in have and have[k] != want[k]][:5]
            sys.exit(f"{model_id}: names/shapes differ from {keys_file}: missing {missing}, extra {extra}, shape {shape}")
        report[f"{model_id}_manifest"] = f"{len(want)} tensors match"
    # AdaFace IR-18 against AdaFace's own net.py (random f16 weights).
    net = IResNet(18)
    sd = {k: v.float() if v.is_floating_point() else v for k, v in load_file(f"{fixtures}/adaface_ir_18.weights.f16.safetensors").items()}
    net.load_state_dict(sd)
    io = load_file(f"{fixtures}/adaface_ir_18.io.safetensors")
    with torch.inference_mode():
        net.eval()
        emb, norm = net(io["image_bgr"])
    err = ((emb - io["embedding"]).abs().max() / io["embedding"].abs().max()).item()
    nerr = ((norm - io["norm"]).abs().max() / io["norm"].abs().max()).item()
    report["adaface_ir18_rel_err"] = max(err, nerr)
    # ViT-KPRPE tiny against CVLface's code.
    net = VitKprpe("tiny")
    sd = {k.removeprefix("net."): v for k, v in load_file(f"{fixtures}/vit_kprpe_tiny.weights.safetensors").items()}
    net.load_state_dict(sd)
    io = load_file(f"{fixtures}/vit_kprpe_tiny.io.safetensors")
    with torch.inference_mode():
        net.eval()
        a = net(io["image"], io["keypoints"])
        b = net(io["image"], torch.full_like(io["keypoints"], 0.5))
    for name, got in [("embedding", a), ("embedding_centre_keypoints", b)]:
        want = io[name]
        report[f"vit_kprpe_tiny_{name}_rel_err"] = ((got - want).abs().max() / want.abs().max()).item()
    worst = max(v for k, v in report.items() if k.endswith("rel_err"))
    if worst > 1e-4:
        sys.exit(f"self-check failed: {report}")
    return report


# -------------------------------------------------------------------- main


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, choices=sorted(MODELS))
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--iters", type=int, default=5, help="timed passes after one warm-up; best and median reported")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-weights", metavar="FILE", help="write the random weights as safetensors")
    p.add_argument("--save-reference", metavar="FILE", help="write unit embeddings and norms of the bench batch")
    p.add_argument("--self-check", metavar="FIXTURES", help="check the definitions against shared/fixtures/seed-models first")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    out = {"impl": "pytorch", "torch": torch.__version__}
    if args.self_check:
        out["self_check"] = self_check(args.self_check)

    kind, net = build(args.model)
    randomise(net, args.seed)
    crops = torch.from_numpy(bench_crops(args.batch))
    keypoints = torch.from_numpy(bench_keypoints(args.batch))
    run = embed_fn(kind, net, crops, keypoints)
    calibrate(net, run)

    if args.save_weights:
        from safetensors.torch import save_file

        save_file(state_dict_for_file(kind, net), args.save_weights)
    times = []
    with torch.inference_mode():
        emb, norm = run()  # warm-up (and the reference output)
        for _ in range(max(1, args.iters)):
            t = time.perf_counter()
            run()
            times.append(time.perf_counter() - t)
    if args.save_reference:
        from safetensors.torch import save_file

        save_file({"embedding": emb.contiguous(), "norm": norm.reshape(-1).contiguous()}, args.save_reference)
    best, median = min(times), statistics.median(times)
    out.update(
        {
            "model": args.model,
            "batch": args.batch,
            "threads": torch.get_num_threads(),
            "iters": len(times),
            "params": sum(v.numel() for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")),
            "best_s": best,
            "median_s": median,
            "embeddings_per_s": args.batch / best,
            "median_embeddings_per_s": args.batch / median,
            "weights": "random (speed does not depend on the values)",
        }
    )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
