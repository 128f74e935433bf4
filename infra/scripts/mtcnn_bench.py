#!/usr/bin/env python3
"""Times facenet-pytorch's MTCNN (the reference Osprey's MTCNN port matches)
on whole images: `MTCNN(keep_all=True, device="cpu")` with its defaults and
`detect(img, landmarks=True)`, the same call `osprey bench mtcnn` times.
Images are decoded once, outside the timing. Prints one JSON line with the
fields of `osprey bench mtcnn --json`. Used by bench-face-models.sh.
"""

import argparse
import json
import time
from importlib.metadata import version

import torch
from facenet_pytorch import MTCNN
from PIL import Image


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("images", nargs="+")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    images = [Image.open(p).convert("RGB") for p in args.images]
    mtcnn = MTCNN(keep_all=True, device="cpu")
    best, faces = float("inf"), 0
    with torch.inference_mode():
        for _ in range(max(1, args.repeat)):
            t = time.perf_counter()
            faces = 0
            for img in images:
                boxes, _, _ = mtcnn.detect(img, landmarks=True)
                faces += 0 if boxes is None else len(boxes)
            best = min(best, time.perf_counter() - t)
    print(json.dumps({
        "impl": "facenet-pytorch",
        "facenet_pytorch": version("facenet-pytorch"),
        "torch": torch.__version__,
        "images": len(images),
        "megapixels": sum(i.width * i.height for i in images) / 1e6,
        "faces": faces,
        "threads": args.threads,
        "best_s": best,
        "images_per_s": len(images) / best,
        "faces_per_s": faces / best,
    }))


if __name__ == "__main__":
    main()
