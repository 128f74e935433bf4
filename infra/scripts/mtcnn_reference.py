#!/usr/bin/env python3
"""facenet-pytorch's MTCNN answers on a few real photographs: the reference
for Osprey's Rust port (libs/osprey-models/src/mtcnn.rs). Run once; its
output is committed as test data and read by
libs/osprey-models/tests/mtcnn_parity.rs.

    python3 -m venv /tmp/venv-mtcnn
    /tmp/venv-mtcnn/bin/pip install facenet-pytorch==2.6.0
    /tmp/venv-mtcnn/bin/python infra/scripts/mtcnn_reference.py --data ../shared/data \\
        --out libs/osprey-models/tests/data/mtcnn_reference.json

Recorded with facenet-pytorch 2.6.0, torch 2.2.2 (the PyPI wheel, run on the
CPU), torchvision 0.17.2, numpy 1.26.4 and Pillow 10.2.0 (facenet-pytorch's
own pins), on Python 3.11; the versions used are also written into the
output.

Each image is decoded by Pillow and converted to 8-bit RGB with no EXIF
rotation (alpha dropped, grey replicated), which is what the Rust test gets
from the `image` crate; `rgb_fnv1a64` (FNV-1a of the HxWx3 bytes) lets a
consumer check that its decoder saw the same pixels (JPEG decoders may
differ by a few grey levels). Detection uses
`MTCNN(keep_all=True, device="cpu")` with its defaults (minimum face 20 px,
factor 0.709, thresholds 0.6/0.7/0.7, largest face first) and
`detect(img, landmarks=True)`. Coordinates are pixels, x right and y down;
boxes are [x1, y1, x2, y2] and landmarks [x, y] for the left eye, right eye,
nose, left and right mouth corners.
"""

import argparse
import json
import os
from importlib.metadata import version

import numpy as np
import torch
from facenet_pytorch import MTCNN
from PIL import Image

GENERATOR = "infra/scripts/mtcnn_reference.py"

# Relative to the data folder (see its SOURCES.md). JPEG photos with 0 to 8
# faces of 40 to 250 px; then PNG and PGM files, which every decoder turns
# into the same pixels: RGBA (alpha dropped), grey, aligned crops, no face.
IMAGES = [
    "insightface-pypi/insightface/data/images/t1.jpg",
    "face_recognition/examples/knn_examples/test/obama_and_biden.jpg",
    "face-api.js/examples/images/bbt1.jpg",
    "facenet-pytorch/data/multiface.jpg",
    "dlib/examples/faces/2008_002506.jpg",
    "dlib/examples/faces/dogs.jpg",
    "face_recognition/examples/obama-240p.jpg",
    "face_recognition/examples/lin-manuel-miranda.png",
    "face_recognition/examples/alex-lacamoire.png",
    "face_recognition/tests/test_images/32bit.png",
    "scikit-image/skimage/data/astronaut.png",
    "face-api.js/test/images/face1.png",
    "face-api.js/test/images/face_rectangular.png",
    "face-api.js/test/images/white.png",
    "insightface-pypi/insightface/data/images/Tom_Hanks_54745.png",
    "att_faces_orl/s2/1.pgm",
]


def load_rgb(path):
    with Image.open(path) as im:
        return im.convert("RGB")


def fnv1a64(data):
    """FNV-1a (64-bit) of the bytes, as 16 hex digits: cheap for a Rust test
    to recompute without a hashing crate."""
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def floats(a):
    return [float(v) for v in np.asarray(a, dtype=np.float32).ravel()]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="the shared data folder")
    ap.add_argument("--out", required=True, help="JSON file to write")
    args = ap.parse_args()

    mtcnn = MTCNN(keep_all=True, device="cpu")
    images = []
    for rel in IMAGES:
        img = load_rgb(os.path.join(args.data, rel))
        with torch.no_grad():
            boxes, probs, points = mtcnn.detect(img, landmarks=True)
        faces = []
        if boxes is not None:
            for box, prob, pts in zip(boxes, probs, points):
                lm = floats(pts)
                faces.append({
                    "bbox": floats(box),
                    "prob": float(np.float32(prob)),
                    "landmarks": [lm[i:i + 2] for i in range(0, 10, 2)],
                })
        images.append({
            "path": rel,
            "width": img.width,
            "height": img.height,
            "rgb_fnv1a64": fnv1a64(np.asarray(img, dtype=np.uint8).tobytes()),
            "faces": faces,
        })
        print(f"{rel}: {len(faces)} faces")

    out = {
        "generator": GENERATOR,
        "versions": {p: version(p) for p in ("facenet-pytorch", "torch", "torchvision", "numpy", "Pillow")},
        "detector": "MTCNN(keep_all=True, device='cpu').detect(img, landmarks=True)",
        "images": images,
    }
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
