#!/usr/bin/env python3
"""Reference foreground masks of OpenCV's MOG2 background subtractor, for Osprey's tests.

Osprey's silhouettes come from its own Rust port of Zivkovic's adaptive Gaussian
mixture (libs/osprey-pipeline/src/silhouette.rs), the model behind OpenCV's
`cv2.createBackgroundSubtractorMOG2`. This script runs OpenCV's subtractor with
its defaults (history 500, varThreshold 16, detectShadows True) over every
frame of OpenCV's static-camera sample `vtest.avi` and writes:

* `silhouette_vtest_reference.json`: per frame, the share of pixels OpenCV
  labels foreground (255) and shadow (127); for the checkpoint frames, an
  FNV-1a 64 hash of the RGB frame (to prove both sides saw the same pixels);
* `silhouette_vtest_masks.png`: OpenCV's masks (0/127/255) of the checkpoint
  frames, stacked top to bottom in checkpoint order.

Frames are decoded by the ffmpeg command line to rgb24 (the same pixels as
Osprey's FFmpeg-based decoder) and given to OpenCV in BGR order, as
`cv2.VideoCapture` would.

Requirements (pinned): opencv-python-headless==4.10.0.84 numpy==2.1.3, ffmpeg.

Usage:
  silhouette_reference.py [DATA_ROOT] [OUT_DIR]
    DATA_ROOT defaults to ../../../shared/data from this script's repository;
    OUT_DIR to libs/osprey-pipeline/tests/data.
  silhouette_reference.py --bench VIDEO [FRAMES]
    OpenCV's cost per frame on the first FRAMES (default 200) frames of VIDEO,
    timed after the first 20, like Osprey's
    `cargo run --release -p osprey-pipeline --example bench_background`.
"""

import json
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

OPENCV_VERSION = "4.10.0"
NUMPY_VERSION = "2.1.3"
VIDEO = "debian-opencv-doc/vtest.avi"
WIDTH, HEIGHT = 768, 576
CHECKPOINTS = [10, 50, 100, 200, 300, 400, 500, 600, 700, 794]


def fnv1a64(data: bytes) -> str:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def frames(path: Path, width=WIDTH, height=HEIGHT, limit=None):
    """The video's frames (the first `limit`, default all) as rgb24 bytes, in decode order."""
    count = ["-frames:v", str(limit)] if limit else []
    proc = subprocess.Popen(
        ["ffmpeg", "-v", "error", "-i", str(path), *count, "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        stdout=subprocess.PIPE,
    )
    size = width * height * 3
    while True:
        buf = proc.stdout.read(size)
        if len(buf) < size:
            break
        yield buf
    if proc.wait() != 0:
        raise SystemExit(f"ffmpeg failed on {path}")


def bench(path: Path, limit: int):
    """Milliseconds per frame of OpenCV's MOG2 (defaults) on the first `limit` frames."""
    probe = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                            "stream=width,height", "-of", "csv=p=0", str(path)],
                           capture_output=True, text=True, check=True).stdout
    width, height = (int(v) for v in probe.strip().split(",")[:2])
    images = []
    for rgb in frames(path, width, height, limit):
        images.append(np.ascontiguousarray(np.frombuffer(rgb, np.uint8).reshape(height, width, 3)[:, :, ::-1]))
    warmup = 20
    if len(images) <= warmup:
        raise SystemExit(f"{path} has {len(images)} frames; the benchmark needs more than {warmup}")
    subtractor = cv2.createBackgroundSubtractorMOG2()
    total = 0.0
    for i, img in enumerate(images):
        start = time.perf_counter()
        subtractor.apply(img)
        if i >= warmup:
            total += time.perf_counter() - start
    n = len(images) - warmup
    print(f"{path}: {width}x{height}, {n} frames timed, OpenCV {cv2.__version__} with {cv2.getNumThreads()} "
          f"threads: MOG2 apply {1000 * total / n:.1f} ms/frame")


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--bench":
        if len(sys.argv) < 3:
            raise SystemExit("usage: silhouette_reference.py --bench VIDEO [FRAMES]")
        bench(Path(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 200)
        return
    repo = Path(__file__).resolve().parents[2]
    data = Path(sys.argv[1]) if len(sys.argv) > 1 else repo.parent / "shared" / "data"
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else repo / "libs/osprey-pipeline/tests/data"
    if not cv2.__version__.startswith(OPENCV_VERSION) or np.__version__ != NUMPY_VERSION:
        print(f"warning: made with OpenCV {OPENCV_VERSION} and numpy {NUMPY_VERSION}, running "
              f"{cv2.__version__} and {np.__version__}", file=sys.stderr)
    subtractor = cv2.createBackgroundSubtractorMOG2()
    per_frame = []
    checkpoints = []
    masks = []
    for index, rgb in enumerate(frames(data / VIDEO)):
        bgr = np.ascontiguousarray(np.frombuffer(rgb, np.uint8).reshape(HEIGHT, WIDTH, 3)[:, :, ::-1])
        mask = subtractor.apply(bgr)
        values = set(np.unique(mask).tolist())
        if not values <= {0, 127, 255}:
            raise SystemExit(f"frame {index}: unexpected mask values {sorted(values)}")
        per_frame.append([round(float((mask == 255).mean()), 6), round(float((mask == 127).mean()), 6)])
        if index in CHECKPOINTS:
            checkpoints.append({"frame": index, "rgb_fnv1a64": fnv1a64(rgb)})
            masks.append(mask)
    if len(checkpoints) != len(CHECKPOINTS):
        raise SystemExit(f"the video has {len(per_frame)} frames; checkpoints need {CHECKPOINTS[-1] + 1}")
    out.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out / "silhouette_vtest_masks.png"), np.concatenate(masks, axis=0))
    reference = {
        "source": VIDEO,
        "opencv": cv2.__version__,
        "subtractor": {"history": subtractor.getHistory(), "var_threshold": subtractor.getVarThreshold(),
                       "detect_shadows": subtractor.getDetectShadows(), "mixtures": subtractor.getNMixtures(),
                       "background_ratio": subtractor.getBackgroundRatio(),
                       "var_threshold_gen": subtractor.getVarThresholdGen(), "var_init": subtractor.getVarInit(),
                       "var_min": subtractor.getVarMin(), "var_max": subtractor.getVarMax(),
                       "complexity_reduction": subtractor.getComplexityReductionThreshold(),
                       "shadow_threshold": subtractor.getShadowThreshold()},
        "frame_size": [WIDTH, HEIGHT],
        "frames": len(per_frame),
        "foreground_shadow_share": per_frame,
        "checkpoints": checkpoints,
        "masks_png": "silhouette_vtest_masks.png",
    }
    # One line per frame keeps the file readable in a diff.
    text = json.dumps({**reference, "foreground_shadow_share": "@"}, indent=1)
    rows = ",\n  ".join(json.dumps(r) for r in per_frame)
    text = text.replace('"@"', "[\n  " + rows + "\n ]")
    json.loads(text)
    (out / "silhouette_vtest_reference.json").write_text(text + "\n")
    print(f"{len(per_frame)} frames, {len(checkpoints)} checkpoint masks -> {out}")


if __name__ == "__main__":
    main()
