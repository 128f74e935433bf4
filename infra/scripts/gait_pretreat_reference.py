#!/usr/bin/env python3
"""Reference outputs of OpenGait's silhouette pretreatment, for Osprey's tests.

OpenGait (`datasets/pretreatment.py`, then `BaseSilCuttingTransform` at load)
turns each silhouette into a 64x44 frame: drop frames whose pixel sum is at
most 10000, keep the rows from the first to the last with foreground, resize to
height 64 with `cv2.resize(..., interpolation=cv2.INTER_CUBIC)` keeping the
aspect ratio (width truncated), centre a 64-wide window on the column where the
cumulative column sum first exceeds half the total (padding 32 zero columns on
both sides when the window would reach the first column or pass the last;
frames without a centre, or centred on column 0, are dropped), then cut 10
columns from each side.

This script runs those steps with OpenCV on real silhouettes and writes, per
frame, the SHA-256 of the 64x44 result and a few values, as JSON, so that
`libs/osprey-models/tests/seed_gaitbase.rs` can check the Rust port byte for
byte without committing image data.

OpenCV's x86-64 wheels contain Intel IPP, which by default replaces OpenCV's own
bicubic resize for 8-bit images with IPP's closed implementation. The reference
is computed with OpenCV's own code (`cv2.ipp.setUseIPP(False)`, what Osprey
reproduces); how many output bytes the default (IPP) path changes is recorded
beside it.

Requirements (pinned): opencv-python-headless==4.10.0.84 numpy==2.1.3

Usage:
  gait_pretreat_reference.py [DATA_ROOT] [OUT.json]
    DATA_ROOT defaults to ../../../shared/data from this script's repository;
    OUT.json to libs/osprey-models/tests/data/gait_pretreat_reference.json.
"""

import hashlib
import json
import sys
from pathlib import Path

import cv2
import numpy as np

OPENCV_VERSION = "4.10.0"
NUMPY_VERSION = "2.1.3"
TRACK = "All-in-One-Gait/OpenGait/demo/output/GaitSilhouette/gallery/001/undefined"
FRAMES = 10  # spread evenly over the track
# The track's walker stays near the image centre, so OpenGait's padding branch
# is also exercised on the first frame with its columns before this one removed
# (the walker then sits at the left edge).
LEFT_EDGE_FROM = 80
SIZE = 64
CUT = 10
MIN_SUM = 10000


def stored_frame(img):
    """The 64x64 frame OpenGait stores for a grey silhouette, or None (dropped), with details."""
    if int(img.sum(dtype=np.int64)) <= MIN_SUM:
        return None, {"dropped": "empty"}
    rows = np.flatnonzero(img.sum(axis=1, dtype=np.int64))
    crop = img[rows[0]:rows[-1] + 1, :]
    new_w = int(SIZE * (crop.shape[1] / crop.shape[0]))
    if new_w == 0:
        return None, {"dropped": "too narrow"}
    resized = cv2.resize(crop, (new_w, SIZE), interpolation=cv2.INTER_CUBIC)
    columns = resized.sum(axis=0, dtype=np.int64)
    total = int(columns.sum())
    over = np.flatnonzero(np.cumsum(columns) > total / 2)
    if over.size == 0 or over[0] == 0:
        return None, {"dropped": "no centre"}
    centre = int(over[0])
    half = SIZE // 2
    left = centre - half
    padded = left <= 0 or centre + half >= new_w
    if padded:
        zeros = np.zeros((SIZE, half), np.uint8)
        resized = np.concatenate([zeros, resized, zeros], axis=1)
        left += half
    window = resized[:, left:left + SIZE].astype(np.uint8)
    return window, {"resized_width": new_w, "centre": centre, "padded": bool(padded)}


def model_frame(img):
    frame, info = stored_frame(img)
    return (None if frame is None else np.ascontiguousarray(frame[:, CUT:SIZE - CUT])), info


def main():
    if not cv2.__version__.startswith(OPENCV_VERSION) or np.__version__ != NUMPY_VERSION:
        sys.exit(f"needs opencv-python-headless {OPENCV_VERSION} and numpy {NUMPY_VERSION}, "
                 f"found {cv2.__version__} and {np.__version__}")
    repo = Path(__file__).resolve().parents[2]
    data = Path(sys.argv[1]) if len(sys.argv) > 1 else repo / "../shared/data"
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else repo / "libs/osprey-models/tests/data/gait_pretreat_reference.json"
    files = sorted((data / TRACK).glob("*.png"))
    if not files:
        sys.exit(f"no silhouettes under {data / TRACK}")
    step = max(1, len(files) // FRAMES)
    chosen = files[::step][:FRAMES]

    frames = []
    for path, columns_from in [(p, 0) for p in chosen] + [(chosen[0], LEFT_EDGE_FROM)]:
        img = np.ascontiguousarray(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)[:, columns_from:])
        cv2.ipp.setUseIPP(True)
        with_ipp, _ = model_frame(img)
        cv2.ipp.setUseIPP(False)
        frame, info = model_frame(img)
        entry = {"file": path.relative_to(data).as_posix(), "columns_from": columns_from,
                 "source_sum": int(img.sum(dtype=np.int64)), **info}
        if frame is not None:
            entry.update({
                "sha256": hashlib.sha256(frame.tobytes()).hexdigest(),
                "sum": int(frame.sum(dtype=np.int64)),
                "row_32": frame[32].tolist(),
                "ipp_default_bytes_differing": None if with_ipp is None else int((with_ipp != frame).sum()),
            })
        frames.append(entry)

    doc = {
        "about": "OpenGait silhouette pretreatment (64x44 uint8, row-major) computed by "
                 "infra/scripts/gait_pretreat_reference.py with OpenCV's own INTER_CUBIC (IPP off)",
        "opencv": cv2.__version__,
        "numpy": np.__version__,
        "frames": frames,
    }
    out.write_text(json.dumps(doc, indent=1) + "\n")
    kept = sum(1 for f in frames if "sha256" in f)
    print(f"wrote {out}: {kept} of {len(frames)} frames kept")


if __name__ == "__main__":
    main()
