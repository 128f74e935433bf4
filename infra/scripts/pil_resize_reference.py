#!/usr/bin/env python3
"""Pillow's own bilinear resizes of a few real images: the reference for
Osprey's bit-exact Rust port (libs/osprey-models/src/pil_resize.rs), which
re-identification models such as torchreid's OSNet need because they were
trained on crops resized by `PIL.Image.resize(size, Image.BILINEAR)`.

Run once with each pinned Pillow (11.3.0 for the releases before 13, whose
pass order is always horizontal first, and 13.0.0, which shrinks tall
images vertically first); the outputs are committed as test data:

    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install pillow==11.3.0
    /tmp/venv/bin/python infra/scripts/pil_resize_reference.py --data ../shared/data \\
        --out libs/osprey-models/tests/data/pil_resize_reference.json
    python3 -m venv /tmp/venv13 && /tmp/venv13/bin/pip install pillow==13.0.0
    /tmp/venv13/bin/python infra/scripts/pil_resize_reference.py --data ../shared/data \\
        --out libs/osprey-models/tests/data/pil_resize_reference_13.json

No image data is written: each case records the SHA-256 of the decoded
(converted, cropped) source bytes, so the Rust test knows whether its own
decoder produced the same pixels, the SHA-256 of the resized bytes, the sum
of every output row's bytes (to locate a difference) and a few pixels.
PNG sources decode identically everywhere; JPEG decoders may differ, and the
Rust test checks those cases only when the decoded source matches.
"""

import argparse
import hashlib
import json
import os

import PIL
from PIL import Image

PILLOW_VERSIONS = ("11.3.0", "13.0.0")

# (name, source under --data, crop box (left, top, right, bottom) or None, output (width, height))
CASES = [
    ("astronaut_crop_up", "scikit-image/skimage/data/astronaut.png", (200, 40, 264, 168), (128, 256)),
    ("astronaut_down", "scikit-image/skimage/data/astronaut.png", None, (128, 256)),
    ("astronaut_odd_down", "scikit-image/skimage/data/astronaut.png", (37, 11, 500, 497), (128, 256)),
    ("rectangular_up", "face-api.js/test/images/face_rectangular.png", None, (128, 256)),
    ("aligned_face_mixed", "facenet-pytorch/data/test_images_aligned/kate_siegel/1.png", None, (128, 256)),
    ("rgba_png_crop_down", "face_recognition/examples/lin-manuel-miranda.png", (150, 60, 451, 583), (128, 256)),
    ("width_only", "facenet-pytorch/data/test_images_aligned/kate_siegel/1.png", None, (97, 160)),
    ("height_only", "facenet-pytorch/data/test_images_aligned/kate_siegel/1.png", None, (160, 301)),
    ("query_jpeg_up", "person_search_demo/query/0001_c1s1_001051_00.jpg", None, (128, 256)),
    ("frame_jpeg_crop_down", "person_search_demo/data/samples/c1s1_001051.jpg", (812, 290, 1003, 713), (128, 256)),
    # Tall crops shrunk more in height than in width: Pillow 13 runs the vertical pass first.
    ("tall_png_crop_down", "face_recognition/examples/lin-manuel-miranda.png", (200, 40, 300, 600), (128, 256)),
    ("tall_png_both_down", "scikit-image/skimage/data/astronaut.png", (100, 0, 250, 512), (128, 256)),
]

SAMPLE_POINTS = [(0, 0), (1, 0), (0, 1), (17, 33), (63, 127), (64, 128), (100, 200), (-1, -1), (-2, 5), (5, -2)]


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="the shared data folder (holds scikit-image/, person_search_demo/, ...)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    if PIL.__version__ not in PILLOW_VERSIONS:
        raise SystemExit(f"Pillow {PIL.__version__} installed, the references are pinned to {' or '.join(PILLOW_VERSIONS)}")

    cases = []
    for name, source, box, size in CASES:
        with Image.open(os.path.join(args.data, source)) as im:
            im = im.convert("RGB")
            if box is not None:
                im = im.crop(box)
            src = im.tobytes()
            out = im.resize(size, Image.BILINEAR)
        w, h = size
        data = out.tobytes()
        assert len(data) == w * h * 3
        samples = []
        for x, y in SAMPLE_POINTS:
            x, y = x % w, y % h
            samples.append([x, y, *out.getpixel((x, y))])
        cases.append({
            "name": name,
            "source": source,
            "crop": list(box) if box is not None else None,
            "source_size": [im.width, im.height],
            "size": [w, h],
            "source_sha256": sha256(src),
            "output_sha256": sha256(data),
            "row_sums": [sum(data[y * w * 3:(y + 1) * w * 3]) for y in range(h)],
            "samples": samples,
        })
    doc = {
        "generator": "infra/scripts/pil_resize_reference.py",
        "pillow": PIL.__version__,
        "call": "Image.open(source).convert('RGB').crop(crop).resize(size, Image.BILINEAR)",
        "cases": cases,
    }
    with open(args.out, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    main()
