#!/usr/bin/env python3
"""face_recognition's speed on a video: the reference side of Osprey's video
benchmark.

    python infra/scripts/facerec_video_bench.py [--max-frames N] [--json] \\
        [VIDEO]   # default ../shared/data/facenet-pytorch/examples/video.mp4

Frames are decoded by the ffmpeg CLI into raw rgb24 and read from its pipe, as
infra/scripts/hamilton_reference.py does it (there is no OpenCV). Three
passes over the video, each decoding it afresh:
  (a) decode:  frames through the pipe, nothing else;
  (b) full:    face_recognition's video approach (examples/
               facerec_from_video_file.py) on every frame: face_locations
               (HOG, --upsample, default 1) then face_encodings of those
               locations;
  (c) sampled: the same on every round(fps / --sample-fps)-th frame only
               (5 fps by default), every frame still decoded.
Each mode reports frames decoded, frames processed, seconds (wall, decode
included), frames/s (decoded frames over seconds) and faces found; --json
prints them as one JSON line, otherwise a short table.

--max-frames N has ffmpeg stop every pass after N frames (-frames:v N).
Nothing is pinned here; run it under taskset to choose cores. dlib's HOG code
is single threaded; ffmpeg decodes in its own process, beside it.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hamilton_reference import frames, probe, tool_versions  # noqa: E402

DEFAULT_VIDEO = "../shared/data/facenet-pytorch/examples/video.mp4"


def run_pass(video, width, height, max_frames, step, detect, upsample, detector="hog"):
    """One pass: decodes the video (up to max_frames), runs detection and
    encoding on every step-th frame when detect is set. Returns the mode's
    numbers."""
    import face_recognition

    decoded = processed = faces = 0
    cpu0, t0 = time.process_time(), time.perf_counter()
    gen = frames(video, width, height, max_frames)
    try:
        for index, rgb in enumerate(gen):
            decoded += 1
            if detect and index % step == 0:
                locations = face_recognition.face_locations(rgb, number_of_times_to_upsample=upsample, model=detector)
                face_recognition.face_encodings(rgb, locations)
                processed += 1
                faces += len(locations)
    finally:
        gen.close()  # stops ffmpeg if the pass ended early (an error)
    seconds = time.perf_counter() - t0
    return {
        "frames": decoded,
        "processed": processed,
        "seconds": round(seconds, 4),
        "frames_per_s": round(decoded / seconds, 3) if seconds > 0 else None,
        "processed_per_s": round(processed / seconds, 3) if seconds > 0 and detect else None,
        "faces": faces if detect else None,
        "python_cpu_s": round(time.process_time() - cpu0, 4),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("video", nargs="?", default=DEFAULT_VIDEO, help=f"the clip (default {DEFAULT_VIDEO})")
    ap.add_argument("--max-frames", type=int, help="decode at most N frames in each pass")
    ap.add_argument("--sample-fps", type=float, default=5.0, help="rate of the sampled pass (default 5)")
    ap.add_argument("--upsample", type=int, default=1, help="HOG detector upsamples (default 1)")
    ap.add_argument("--detector", choices=["hog", "cnn"], default="hog",
                    help="face_recognition's detector: hog (the video example's) or cnn (dlib's MMOD, as Osprey)")
    ap.add_argument("--modes", default="decode,full,sampled", help="passes to run (default decode,full,sampled)")
    ap.add_argument("--json", action="store_true", help="print one JSON line")
    args = ap.parse_args()
    if args.max_frames is not None and args.max_frames < 1:
        ap.error("--max-frames must be at least 1")
    if args.sample_fps <= 0:
        ap.error("--sample-fps must be positive")

    width, height, rate, nb_frames = probe(args.video)
    fps = float(rate)
    step = max(1, round(fps / args.sample_fps))

    total0 = time.perf_counter()
    passes = {"decode": (1, False), "full": (1, True), "sampled": (step, True)}
    wanted = [m.strip() for m in args.modes.split(",") if m.strip()]
    for m in wanted:
        if m not in passes:
            ap.error(f"unknown mode {m!r}; choose from {', '.join(passes)}")
    modes = {
        m: run_pass(args.video, width, height, args.max_frames, passes[m][0], passes[m][1], args.upsample, args.detector)
        for m in wanted
    }
    total = time.perf_counter() - total0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    doc = {
        "video": args.video,
        "width": width,
        "height": height,
        "fps": fps,
        "nb_frames": nb_frames,
        "max_frames": args.max_frames,
        "detector": args.detector,
        "upsample": args.upsample,
        "sample_fps": args.sample_fps,
        "sample_step": step,
        "cores_allowed": cores,
        "versions": tool_versions(),
        "modes": modes,
        "total_s": round(total, 3),
    }
    if args.json:
        print(json.dumps(doc))
        return
    print(f"{args.video}: {width}x{height} @ {fps:g} fps, sampled every {step} frame(s), {cores} core(s) allowed")
    print(f"{'mode':8} {'frames':>6} {'processed':>9} {'seconds':>9} {'frames/s':>9} {'faces':>6}")
    for name, m in modes.items():
        faces = "-" if m["faces"] is None else m["faces"]
        print(f"{name:8} {m['frames']:6d} {m['processed']:9d} {m['seconds']:9.3f} {m['frames_per_s']:9.2f} {faces!s:>6}")
    print(f"total {total:.1f} s")


if __name__ == "__main__":
    main()
