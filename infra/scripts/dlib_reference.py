#!/usr/bin/env python3
"""dlib's own answers on the test images: the reference for Osprey's Rust port
of dlib's face models (MMOD CNN detector, 5-point shape predictor, ResNet face
descriptor). Run once; its output is committed as test data.

    python infra/scripts/dlib_reference.py --data ../shared/data --models models \\
        --out libs/osprey-models/tests/data/dlib_reference.json

Every number comes from dlib itself (dlib.cnn_face_detection_model_v1,
dlib.shape_predictor, dlib.face_recognition_model_v1, dlib.get_face_chip), not
from face_recognition's wrappers. Images are decoded with Pillow: EXIF
orientation applied, then converted to 8-bit RGB (alpha dropped, grey
replicated). The CNN detector gets one pyramid_up for images of at most 1.2
megapixels and none for larger ones; each image records what it got.

Identical files (the same photo under several paths) are computed once. Work
is spread over --jobs processes; dlib's CPU code is single-threaded and
deterministic, so the result does not depend on it.
"""

import argparse
import csv
import glob
import hashlib
import json
import multiprocessing
import os
import sys
import time
from collections import defaultdict

import numpy as np
from PIL import Image, ImageOps

GENERATOR = "infra/scripts/dlib_reference.py"
MODEL_FILES = {
    "detector": "mmod_human_face_detector.dat",
    "predictor": "shape_predictor_5_face_landmarks.dat",
    "descriptor": "dlib_face_recognition_resnet_model_v1.dat",
}
UPSAMPLE_MAX_PIXELS = 1_200_000
CHIP_SIZE = 150
CHIP_PADDING = 0.25
EXIF_ORIENTATION = 0x0112
# Folders of 150x150 chips already aligned the way dlib.get_face_chip does it:
# these also get a descriptor of the whole image.
ALIGNED_CHIP_DIRS = ("dlib/examples/johns/",)
DEEPFACE_SUBSET = 20


def load_rgb(path):
    """Decodes an image as dlib's reference sees it: (HxWx3 uint8 array, EXIF
    orientation or None)."""
    with Image.open(path) as im:
        orientation = im.getexif().get(EXIF_ORIENTATION)
        im = ImageOps.exif_transpose(im)
        rgb = np.ascontiguousarray(np.asarray(im.convert("RGB"), dtype=np.uint8))
    return rgb, (int(orientation) if orientation is not None else None)


def upsample_for(rgb):
    h, w = rgb.shape[:2]
    return 1 if h * w <= UPSAMPLE_MAX_PIXELS else 0


def sha256_hex(data):
    return hashlib.sha256(data).hexdigest()


def load_models(models_dir):
    import dlib

    return (
        dlib.cnn_face_detection_model_v1(os.path.join(models_dir, MODEL_FILES["detector"])),
        dlib.shape_predictor(os.path.join(models_dir, MODEL_FILES["predictor"])),
        dlib.face_recognition_model_v1(os.path.join(models_dir, MODEL_FILES["descriptor"])),
    )


def floats(values):
    return [float(v) for v in values]


# --- image selection -----------------------------------------------------------


def pixels_of(path):
    with Image.open(path) as im:
        w, h = ImageOps.exif_transpose(im).size
    return w * h


def detector_cost(path):
    """Roughly what the CNN detector's time is proportional to: pixels after
    the pyramid_up's."""
    px = pixels_of(path)
    return px * 4 if px <= UPSAMPLE_MAX_PIXELS else px


def deepface_subset(data, n):
    """n images of deepface's identity clusters, taken round-robin over the
    clusters (in cluster order), the cheapest for the detector first within
    each cluster, so that every cluster is represented and several have a
    mated pair."""
    clusters = defaultdict(list)
    with open(os.path.join(data, "deepface/DERIVED_identity_clusters.csv"), newline="") as f:
        for row in csv.DictReader(f):
            clusters[row["cluster_id"].strip()].append("deepface/" + row["file"].strip())
    queues = []
    for cid in sorted(clusters):
        files = sorted(clusters[cid], key=lambda p: (detector_cost(os.path.join(data, p)), p))
        queues.append(files)
    chosen = []
    while len(chosen) < n and any(queues):
        for q in queues:
            if q and len(chosen) < n:
                chosen.append(q.pop(0))
    return chosen


def image_list(data):
    def g(pattern):
        found = sorted(glob.glob(os.path.join(data, pattern)))
        if not found:
            raise SystemExit(f"dlib_reference: nothing matches {pattern} under {data}")
        return [os.path.relpath(p, data) for p in found if os.path.isfile(p)]

    paths = []
    paths += g("face_recognition/examples/*.jpg") + g("face_recognition/examples/*.png")
    paths += g("face_recognition/examples/knn_examples/train/*/*")
    paths += g("face_recognition/examples/knn_examples/test/*")
    paths += g("face_recognition/tests/test_images/*")
    paths += g("dlib/examples/faces/*.jpg")
    paths += g("dlib/examples/johns/*/*")
    for name in ("amy", "bernadette", "howard", "leonard", "penny", "raj", "sheldon", "stuart"):
        for i in range(1, 6):
            p = f"face-api.js/examples/images/{name}/{name}{i}.png"
            if not os.path.isfile(os.path.join(data, p)):
                raise SystemExit(f"dlib_reference: missing {p} under {data}")
            paths.append(p)
    paths += g("face-api.js/examples/images/bbt*.jpg")
    paths += deepface_subset(data, DEEPFACE_SUBSET)
    paths += g("insightface-pypi/insightface/data/images/t1.jpg")
    return paths


# --- the computation -----------------------------------------------------------

_models = None


def _init_worker(models_dir):
    global _models
    _models = load_models(models_dir)


def compute(job):
    """One image's record, less its path. Any failure becomes {"error": ...}."""
    data, rel = job
    import dlib

    cnn, sp, facerec = _models
    t0 = time.perf_counter()
    try:
        rgb, orientation = load_rgb(os.path.join(data, rel))
        h, w = rgb.shape[:2]
        up = upsample_for(rgb)
        rec = {
            "width": w,
            "height": h,
            "exif_orientation": orientation,
            "rgb_sha256": sha256_hex(rgb.tobytes()),
            "upsample": up,
            "detections": [],
            "faces": [],
        }
        for det in cnn(rgb, up):
            r = det.rect
            rec["detections"].append(
                {
                    "left": r.left(),
                    "top": r.top(),
                    "right": r.right(),
                    "bottom": r.bottom(),
                    "confidence": float(det.confidence),
                }
            )
            shape = sp(rgb, r)
            chip = np.ascontiguousarray(
                dlib.get_face_chip(rgb, shape, size=CHIP_SIZE, padding=CHIP_PADDING)
            )
            rec["faces"].append(
                {
                    "landmarks": [[shape.part(i).x, shape.part(i).y] for i in range(shape.num_parts)],
                    "chip_sha256": sha256_hex(chip.tobytes()),
                    "chip_mean": float(chip.mean()),
                    "descriptor": floats(facerec.compute_face_descriptor(rgb, shape, 0)),
                }
            )
        if rel.startswith(ALIGNED_CHIP_DIRS):
            if (h, w) != (CHIP_SIZE, CHIP_SIZE):
                raise ValueError(f"expected a {CHIP_SIZE}x{CHIP_SIZE} aligned chip, got {w}x{h}")
            rec["chip_descriptor"] = floats(facerec.compute_face_descriptor(rgb))
    except Exception as e:  # recorded, never skipped silently
        rec = {"error": f"{type(e).__name__}: {e}"}
    return rec, time.perf_counter() - t0


def write_json(out, doc):
    """Pretty at the top, one line per image: readable diffs, small file."""
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        f.write("{\n")
        for key in ("generator", "dlib_version"):
            f.write(f"  {json.dumps(key)}: {json.dumps(doc[key])},\n")
        f.write('  "images": [\n')
        lines = [json.dumps(img, separators=(", ", ": ")) for img in doc["images"]]
        f.write(",\n".join("    " + line for line in lines))
        f.write("\n  ]\n}\n")
    json.loads(open(tmp).read())  # well-formed
    os.replace(tmp, out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="the shared test data folder (../shared/data)")
    ap.add_argument("--models", required=True, help="folder with dlib's three .dat models")
    ap.add_argument("--out", required=True, help="the JSON file to write")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="processes (default: all cores)")
    args = ap.parse_args()

    import dlib

    for name in MODEL_FILES.values():
        if not os.path.isfile(os.path.join(args.models, name)):
            raise SystemExit(f"dlib_reference: {name} not in {args.models} (run infra/scripts/fetch-models.sh)")

    paths = image_list(args.data)
    # The same bytes under several paths are computed once.
    digest = {}
    for rel in paths:
        with open(os.path.join(args.data, rel), "rb") as f:
            digest[rel] = sha256_hex(f.read())
    unique = {}
    for rel in paths:
        unique.setdefault(digest[rel], rel)
    jobs = list(unique.values())
    # Most expensive first, so the last one to finish is a short one.
    jobs.sort(key=lambda rel: -detector_cost(os.path.join(args.data, rel)))
    print(
        f"dlib {dlib.__version__}: {len(paths)} images ({len(jobs)} distinct), {args.jobs} processes",
        file=sys.stderr,
    )

    results = {}
    t0 = time.perf_counter()
    with multiprocessing.Pool(args.jobs, initializer=_init_worker, initargs=(args.models,)) as pool:
        work = [(args.data, rel) for rel in jobs]
        for done, (rel, (rec, secs)) in enumerate(zip(jobs, pool.imap(compute, work)), 1):
            results[rel] = (rec, secs)
            what = rec.get("error") or f"{rec['width']}x{rec['height']} up={rec['upsample']} faces={len(rec['faces'])}"
            print(
                f"[{done:3d}/{len(jobs)}] {time.perf_counter() - t0:7.1f}s {secs:6.1f}s  {rel}  {what}",
                file=sys.stderr,
            )

    images = []
    for rel in paths:
        rec, _ = results[unique[digest[rel]]]
        images.append({"path": rel, **rec})
    write_json(args.out, {"generator": GENERATOR, "dlib_version": dlib.__version__, "images": images})

    print(f"\n{'image':64s} {'size':>10s} {'up':>2s} {'faces':>5s}  confidences")
    for img in images:
        if "error" in img:
            print(f"{img['path']:64s} ERROR {img['error']}")
            continue
        conf = " ".join(f"{d['confidence']:.2f}" for d in img["detections"])
        size = f"{img['width']}x{img['height']}"
        print(f"{img['path']:64s} {size:>10s} {img['upsample']:2d} {len(img['faces']):5d}  {conf}")
    n_faces = sum(len(img.get("faces", [])) for img in images)
    n_err = sum("error" in img for img in images)
    print(
        f"\n{len(images)} images, {n_faces} faces, {n_err} errors, "
        f"{time.perf_counter() - t0:.0f} s; wrote {args.out} ({os.path.getsize(args.out)} bytes)"
    )


if __name__ == "__main__":
    main()
