#!/usr/bin/env python3
"""OpenCV's own bilinear resizes and OpenGait's RGB pretreatment of a few
images: the reference for Osprey's byte-exact Rust port
(libs/osprey-models/src/rgb_pretreat.rs), which BigGait needs because its
frames were made by OpenGait's `datasets/pretreatment_rgb.py`:
`cv2.resize(img, (int(w * 256 / h), 256))` (default INTER_LINEAR), then the
width centre-padded with zeros or centre-cropped to 128, BGR -> RGB.

Run with opencv-python 4.10.0 (the Osprey bench venv has it); the output is
committed as test data:

    ~/.cache/osprey/bench-venv/bin/python infra/scripts/cv_resize_reference.py \\
        --data ../shared/data --out libs/osprey-models/tests/data/cv_resize_reference.json

Two kinds of cases:
* `resize`: `cv2.resize` of synthetic images (1 to 4 channels, up, down,
  one axis, exact factor 2 both ways, row lengths with and without a
  multiple of 16 bytes). The images are made from a formula the Rust test
  repeats (see `pattern`), so no pixels are stored: each case records the
  SHA-256 of the output and, for small outputs, the output bytes in hex.
* `pretreat`: the whole pretreatment of real person images under --data
  (Market-1501 crops and scene frames, a gait silhouette, PNG photos),
  cropped by a box; narrow crops take the padding path, wide ones the
  cropping path. Each records the SHA-256 of the decoded, cropped RGB source
  (so the Rust test knows whether its decoder produced the same pixels;
  JPEG decoders may differ, PNG ones must not), the resized width, the
  offset, the ratio, the SHA-256 of the 256x128x3 RGB result, every row's
  byte sum (to locate a difference) and a few pixels.
"""

import argparse
import hashlib
import json
import os

import cv2
import numpy as np

OPENCV_VERSION = "4.10.0"
HEIGHT, WIDTH = 256, 128

# Synthetic resizes: (name, pattern, seed, channels, (width, height), (dst width, dst height)).
RESIZE_CASES = [
    ("tiny_swap", "noise", 1, 1, (7, 5), (5, 7)),
    ("one_pixel_up", "noise", 2, 1, (1, 1), (3, 4)),
    ("one_column_down", "noise", 3, 1, (1, 9), (1, 4)),
    ("one_row_up", "noise", 4, 1, (9, 1), (4, 3)),
    ("grey_2x_up", "noise", 5, 1, (20, 30), (40, 60)),
    ("grey_2x_down", "noise", 6, 1, (64, 128), (32, 64)),
    ("grey_2x_down_ramp", "ramp", 6, 1, (64, 128), (32, 64)),
    ("grey_up_to_256", "noise", 7, 1, (33, 64), (132, 256)),
    ("grey_wide_up", "ramp", 8, 1, (250, 90), (711, 256)),
    ("grey_down_small", "noise", 9, 1, (61, 200), (17, 13)),
    ("grey_same_size", "noise", 10, 1, (100, 100), (100, 100)),
    ("grey_height_only", "noise", 11, 1, (100, 100), (100, 37)),
    ("grey_width_only", "ramp", 12, 1, (37, 100), (80, 100)),
    ("two_ch_2x_down", "noise", 13, 2, (64, 48), (32, 24)),
    ("two_ch_2x_down_ramp", "ramp", 13, 2, (64, 48), (32, 24)),
    ("two_ch_up", "noise", 14, 2, (50, 101), (126, 256)),
    ("rgb_market_2x_up", "noise", 15, 3, (64, 128), (128, 256)),
    ("rgb_market_2x_up_ramp", "ramp", 15, 3, (64, 128), (128, 256)),
    ("rgb_pad_width", "noise", 16, 3, (191, 423), (115, 256)),
    ("rgb_crop_width", "ramp", 17, 3, (303, 423), (183, 256)),
    ("rgb_square_up", "noise", 18, 3, (192, 192), (256, 256)),
    ("rgb_2x_down", "noise", 19, 3, (66, 130), (33, 65)),
    ("rgb_2x_down_ramp", "ramp", 19, 3, (66, 130), (33, 65)),
    ("rgb_frame_down", "noise", 20, 3, (1920, 1080), (455, 256)),
    ("rgb_frame_down_ramp", "ramp", 20, 3, (1920, 1080), (455, 256)),
    ("rgb_thin_up", "noise", 21, 3, (17, 3), (5, 40)),
    ("rgb_row_48", "noise", 22, 3, (48, 96), (16, 256)),
    ("rgb_row_63", "ramp", 23, 3, (50, 100), (21, 256)),
    ("rgb_3x_down", "noise", 24, 3, (99, 300), (33, 100)),
    ("rgba_2x_down", "noise", 25, 4, (40, 30), (20, 15)),
    ("rgba_up", "noise", 26, 4, (33, 17), (70, 41)),
    ("rgba_down", "ramp", 27, 4, (128, 256), (64, 100)),
]

# OpenGait pretreatment of real crops: (name, source under --data, box (left, top, right, bottom) or None).
PRETREAT_CASES = [
    # Market-1501 crops, 64x128: resized to exactly 128 wide.
    ("market_query_c1", "person_search_demo/query/0001_c1s1_001051_00.jpg", None),
    ("market_query_c6", "person_search_demo/query/0001_c6s1_009601_00.jpg", None),
    # The man by the lamp post in a 1920x1080 Market-1501 scene frame.
    ("frame_person_pad", "person_search_demo/data/samples/c1s1_001051.jpg", (995, 418, 1062, 600)),
    ("frame_person_crop", "person_search_demo/data/samples/c1s1_001051.jpg", (960, 410, 1100, 610)),
    # A gait silhouette (grey PNG; imread gives three equal channels), whole and tightly cropped.
    ("silhouette_crop", "All-in-One-Gait/OpenGait/demo/output/GaitSilhouette/gallery/001/undefined/001-036.png", None),
    ("silhouette_pad", "All-in-One-Gait/OpenGait/demo/output/GaitSilhouette/gallery/001/undefined/001-036.png",
     (66, 14, 127, 180)),
    # PNG photos: a narrow crop, the square image, an odd crop, an RGBA image (imread drops alpha).
    ("astronaut_pad", "scikit-image/skimage/data/astronaut.png", (150, 0, 350, 512)),
    ("astronaut_crop", "scikit-image/skimage/data/astronaut.png", None),
    ("astronaut_odd_crop", "scikit-image/skimage/data/astronaut.png", (37, 11, 500, 497)),
    ("rgba_png_crop", "face_recognition/examples/lin-manuel-miranda.png", (150, 60, 451, 583)),
]

SAMPLE_POINTS = [(0, 0), (1, 0), (0, 1), (17, 33), (63, 127), (64, 128), (100, 200), (-1, -1), (-2, 5), (5, -2)]

RAW_LIMIT = 192  # outputs of at most this many bytes are stored whole, in hex


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def pattern(kind, seed, channels, width, height):
    """The synthetic source image: byte i of the row-major interleaved buffer.
    `noise`: a 32-bit integer hash of (i, seed), top byte; `ramp`: a smooth
    field with wrap-around edges. All arithmetic is on unsigned 32-bit
    integers, as the Rust test repeats it."""
    n = width * height * channels
    i = np.arange(n, dtype=np.uint64)
    m = np.uint64(0xFFFFFFFF)
    if kind == "noise":
        x = (i * np.uint64(2654435761) + np.uint64(seed) * np.uint64(40503) + np.uint64(12345)) & m
        x ^= x >> np.uint64(15)
        x = (x * np.uint64(2246822519)) & m
        x ^= x >> np.uint64(13)
        return (x >> np.uint64(24)).astype(np.uint8)
    assert kind == "ramp"
    c = i % np.uint64(channels)
    px = (i // np.uint64(channels)) % np.uint64(width)
    py = i // np.uint64(channels * width)
    v = px * np.uint64(5) + py * np.uint64(3) + c * np.uint64(60) + ((px * py) >> np.uint64(3)) + np.uint64(seed)
    return (v & np.uint64(255)).astype(np.uint8)


def pretreat(bgr):
    """OpenGait's resize_with_padding(img, (256, 128)) and BGR -> RGB, as
    pretreatment_rgb.py runs it; returns (RGB result, resized width, offset)."""
    h, w, _ = bgr.shape
    rw = int(w * HEIGHT / h)
    resized = cv2.resize(bgr, (rw, HEIGHT))
    offset = (WIDTH - rw) // 2
    if offset < 0:
        out = resized[:, abs(offset):abs(offset) + WIDTH, :]
    else:
        out = np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8)
        out[:, offset:offset + rw] = resized
    return np.ascontiguousarray(cv2.cvtColor(out, cv2.COLOR_BGR2RGB)), rw, offset


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="the shared data folder (holds person_search_demo/, scikit-image/, ...)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    if cv2.__version__ != OPENCV_VERSION:
        raise SystemExit(f"opencv-python {cv2.__version__} installed, the reference is pinned to {OPENCV_VERSION}")

    resize_cases = []
    for name, kind, seed, channels, (w, h), (dw, dh) in RESIZE_CASES:
        src = pattern(kind, seed, channels, w, h).reshape((h, w) if channels == 1 else (h, w, channels))
        out = cv2.resize(src, (dw, dh))
        data = np.ascontiguousarray(out).tobytes()
        assert len(data) == dw * dh * channels
        case = {
            "name": name,
            "pattern": kind,
            "seed": seed,
            "channels": channels,
            "size": [w, h],
            "dst": [dw, dh],
            "output_sha256": sha256(data),
        }
        if len(data) <= RAW_LIMIT:
            case["output_hex"] = data.hex()
        resize_cases.append(case)

    pretreat_cases = []
    for name, source, box in PRETREAT_CASES:
        bgr = cv2.imread(os.path.join(args.data, source))
        if bgr is None:
            raise SystemExit(f"cannot read {source}")
        if box is not None:
            left, top, right, bottom = box
            bgr = np.ascontiguousarray(bgr[top:bottom, left:right])
        h, w, _ = bgr.shape
        out, rw, offset = pretreat(bgr)
        data = out.tobytes()
        assert len(data) == HEIGHT * WIDTH * 3
        ratio = w / h
        samples = []
        for x, y in SAMPLE_POINTS:
            x, y = x % WIDTH, y % HEIGHT
            samples.append([x, y, *(int(v) for v in out[y, x])])
        pretreat_cases.append({
            "name": name,
            "source": source,
            "crop": list(box) if box is not None else None,
            "source_size": [w, h],
            "source_sha256": sha256(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).tobytes()),
            "resized_width": rw,
            "x_offset": offset,
            "path": "crop" if offset < 0 else "pad",
            "ratio_f32": float(np.float32(ratio)),
            "output_sha256": sha256(data),
            "row_sums": [int(out[y].sum(dtype=np.int64)) for y in range(HEIGHT)],
            "samples": samples,
        })

    doc = {
        "generator": "infra/scripts/cv_resize_reference.py",
        "opencv": cv2.__version__,
        "resize_call": "cv2.resize(src, (dst_w, dst_h))  # INTER_LINEAR",
        "pretreat_call": "OpenGait pretreatment_rgb.py: resize_with_padding(cv2.imread(source)[crop], (256, 128)), BGR2RGB",
        "resize": resize_cases,
        "pretreat": pretreat_cases,
    }
    with open(args.out, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    main()
