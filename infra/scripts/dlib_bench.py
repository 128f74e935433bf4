#!/usr/bin/env python3
"""dlib's speed on the face pipeline, the reference that `osprey bench faces`
runs beside its own numbers.

    python infra/scripts/dlib_bench.py --models models --upsample 1 --repeat 3 IMAGES...

Images are decoded once, as infra/scripts/dlib_reference.py does it (EXIF
orientation applied, 8-bit RGB). Then, each R times:
  (a) whole pipeline: CNN detector (--upsample pyramid_up's), 5-point shape
      predictor on every detection, and the descriptors of an image's faces in
      one batch (compute_face_descriptor(img, faces, 0));
  (b) descriptors only: the 150x150 chips of the faces found in (a)
      (dlib.get_face_chips, padding 0.25, cut once, outside the timing) in one
      batch: compute_face_descriptor(list_of_chips).
Times are the best of the R passes. Prints one JSON line.

dlib-bin is built without BLAS and its CPU code runs on one thread (the
threads_note field gives the evidence of this run: CPU time over wall time);
compare it with Osprey on one thread.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dlib_reference import CHIP_PADDING, CHIP_SIZE, load_models, load_rgb  # noqa: E402


def timed(fn, repeat):
    """(best wall seconds, total CPU seconds, total wall seconds, last result)."""
    best, cpu, wall, out = float("inf"), 0.0, 0.0, None
    for _ in range(repeat):
        c0, t0 = time.process_time(), time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t0
        cpu += time.process_time() - c0
        wall += dt
        best = min(best, dt)
    return best, cpu, wall, out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", required=True, help="folder with dlib's three .dat models")
    ap.add_argument("--upsample", type=int, default=1, help="pyramid_up's for the CNN detector")
    ap.add_argument("--repeat", type=int, default=3, help="passes; the best is reported")
    ap.add_argument("images", nargs="+")
    args = ap.parse_args()
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")

    import dlib

    cnn, sp, facerec = load_models(args.models)
    imgs = [load_rgb(p)[0] for p in args.images]

    def whole():
        faces, per_image = 0, []
        for img in imgs:
            shapes = dlib.full_object_detections()
            for det in cnn(img, args.upsample):
                shapes.append(sp(img, det.rect))
            if len(shapes):
                facerec.compute_face_descriptor(img, shapes, 0)
            faces += len(shapes)
            per_image.append(shapes)
        return faces, per_image

    whole_s, whole_cpu, whole_wall, (faces, per_image) = timed(whole, args.repeat)

    chips = []
    for img, shapes in zip(imgs, per_image):
        if len(shapes):
            chips += dlib.get_face_chips(img, shapes, size=CHIP_SIZE, padding=CHIP_PADDING)
    if chips:
        chips_s, chips_cpu, chips_wall, _ = timed(lambda: facerec.compute_face_descriptor(chips), args.repeat)
    else:
        chips_s, chips_cpu, chips_wall = None, 0.0, 0.0

    ratio = (whole_cpu + chips_cpu) / max(whole_wall + chips_wall, 1e-9)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    note = (
        f"DLIB_USE_BLAS={dlib.DLIB_USE_BLAS}, DLIB_USE_CUDA={dlib.DLIB_USE_CUDA}, "
        f"USE_AVX_INSTRUCTIONS={dlib.USE_AVX_INSTRUCTIONS}; CPU/wall time {ratio:.2f} "
        f"with {cores} cores allowed ({'one thread' if ratio < 1.2 else 'several threads'})"
    )
    print(
        json.dumps(
            {
                "images": len(imgs),
                "faces": faces,
                "upsample": args.upsample,
                "repeat": args.repeat,
                "whole_s": whole_s,
                "faces_per_s": faces / whole_s,
                "images_per_s": len(imgs) / whole_s,
                "chips": len(chips),
                "chips_s": chips_s,
                "descriptors_per_s": (len(chips) / chips_s) if chips_s else None,
                "dlib_version": dlib.__version__,
                "threads_note": note,
            }
        )
    )


if __name__ == "__main__":
    main()
