#!/usr/bin/env python3
"""face_recognition's answers on the Hamilton clip: the reference for Osprey's
video face matching. Run once; its output is committed as test data.

    python infra/scripts/hamilton_reference.py \\
        [--video ../shared/data/face_recognition/examples/short_hamilton_clip.mp4] \\
        [--out jobs/osprey-cli/tests/data/hamilton_reference.json]

It follows the logic of face_recognition's examples/facerec_from_video_file.py:
two known faces, lin-manuel-miranda.png and alex-lacamoire.png (from the
video's folder; face_recognition.load_image_file, first encoding of each).
Then, for every frame of the video: face_recognition.face_locations (HOG,
one upsample), face_encodings of those locations, and
compare_faces(known, encoding, tolerance=0.50); a face is named after the
first known face that matches, or null.

There is no OpenCV here: frames are decoded by the ffmpeg CLI into raw rgb24
(every decoded frame, no frame rate conversion) and read from its pipe, which
is what the example's frame[:, :, ::-1] of OpenCV's BGR frames amounts to.

The JSON has the source (video path as given, size, frame rate, frame count,
tool versions, detector settings), one entry per frame with at least one face
(0-based index, t_ms = round(frame * 1000 / fps), each face's
[top, right, bottom, left] box, name and distances to the two known faces to
4 decimals) and summary counts of frames per name. Keys are sorted; one frame
per line.
"""

import argparse
import importlib.metadata
import json
import os
import subprocess
import sys
from fractions import Fraction

import numpy as np

GENERATOR = "infra/scripts/hamilton_reference.py"
DEFAULT_VIDEO = "../shared/data/face_recognition/examples/short_hamilton_clip.mp4"
DEFAULT_OUT = "jobs/osprey-cli/tests/data/hamilton_reference.json"
KNOWN = ("lin-manuel-miranda", "alex-lacamoire")  # order of compare_faces' answer
TOLERANCE = 0.50
UPSAMPLE = 1
DETECTOR = "hog"


def probe(path):
    """(width, height, frame rate as a Fraction, nb_frames or None) of the
    first video stream, from ffprobe."""
    out = subprocess.run(
        [
            "ffprobe", "-v", "error", "-select_streams", "v:0",
            "-show_entries", "stream=width,height,r_frame_rate,nb_frames",
            "-of", "json", path,
        ],
        check=True, capture_output=True, text=True,
    ).stdout
    streams = json.loads(out).get("streams") or []
    if not streams:
        raise SystemExit(f"{path}: no video stream")
    s = streams[0]
    nb = s.get("nb_frames")
    return int(s["width"]), int(s["height"]), Fraction(s["r_frame_rate"]), (int(nb) if nb not in (None, "N/A") else None)


def frames(path, width, height, max_frames=None):
    """Yields every frame of the video (the first max_frames if given) as an
    HxWx3 uint8 RGB array, decoded by ffmpeg (passthrough timing: no frame
    dropped or duplicated)."""
    size = width * height * 3
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-i", path, "-map", "0:v:0", "-fps_mode", "passthrough"]
    if max_frames is not None:
        cmd += ["-frames:v", str(max_frames)]
    cmd += ["-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, bufsize=0)
    complete = False
    try:
        while True:
            buf = bytearray(size)
            view, got = memoryview(buf), 0
            while got < size:
                n = proc.stdout.readinto(view[got:])
                if not n:
                    break
                got += n
            if got == 0:
                break
            if got < size:
                raise SystemExit(f"{path}: truncated frame ({got} of {size} bytes)")
            yield np.frombuffer(buf, dtype=np.uint8).reshape(height, width, 3)
        complete = True
    finally:
        if not complete:  # the reader stopped early: no broken-pipe noise
            proc.kill()
        proc.stdout.close()
        rc = proc.wait()
    if rc != 0:
        raise SystemExit(f"ffmpeg failed on {path} (exit {rc})")


def tool_versions():
    import dlib
    import face_recognition

    def dist(name):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    return {
        "dlib": dlib.__version__,
        "face_recognition": dist("face_recognition") or face_recognition.__version__,
        "numpy": np.__version__,
    }


def write_json(out, doc):
    """Sorted keys, indent 1, one frame per line: readable diffs, small file."""
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    head = {k: v for k, v in doc.items() if k != "frames"}
    lines = [json.dumps(f, sort_keys=True, separators=(", ", ": ")) for f in doc["frames"]]
    keys = sorted(doc)
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        f.write("{\n")
        for i, key in enumerate(keys):
            sep = "," if i < len(keys) - 1 else ""
            if key == "frames":
                f.write(' "frames": [\n')
                f.write(",\n".join("  " + line for line in lines))
                f.write(f"\n ]{sep}\n")
            else:
                body = json.dumps(head[key], sort_keys=True, indent=1).replace("\n", "\n ")
                f.write(f" {json.dumps(key)}: {body}{sep}\n")
        f.write("}\n")
    with open(tmp) as f:
        assert json.load(f) == json.loads(json.dumps(doc))  # well-formed, nothing lost
    os.replace(tmp, out)


def runs(indices):
    """Contiguous runs of sorted frame indices, as [first, last] pairs."""
    out = []
    for i in indices:
        if out and i == out[-1][1] + 1:
            out[-1][1] = i
        else:
            out.append([i, i])
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--video", default=DEFAULT_VIDEO, help=f"the clip (default {DEFAULT_VIDEO})")
    ap.add_argument("--known-dir", help="folder with the known faces' PNGs (default: the video's folder)")
    ap.add_argument("--out", default=DEFAULT_OUT, help=f"the JSON file to write (default {DEFAULT_OUT})")
    args = ap.parse_args()

    import face_recognition

    known_dir = args.known_dir or os.path.dirname(args.video)
    known = []
    for name in KNOWN:
        image = face_recognition.load_image_file(os.path.join(known_dir, name + ".png"))
        encs = face_recognition.face_encodings(image)
        if not encs:
            raise SystemExit(f"no face found in {name}.png")
        known.append(encs[0])

    width, height, rate, nb_frames = probe(args.video)
    fps = float(rate)
    out_frames = []
    counts = {name: 0 for name in KNOWN}
    counts["unknown"] = 0
    faces_total, n = 0, 0
    for n, rgb in enumerate(frames(args.video, width, height), start=1):
        index = n - 1
        locations = face_recognition.face_locations(rgb, number_of_times_to_upsample=UPSAMPLE, model=DETECTOR)
        if not locations:
            continue
        encodings = face_recognition.face_encodings(rgb, locations)
        faces, names = [], set()
        for box, enc in zip(locations, encodings):
            match = face_recognition.compare_faces(known, enc, tolerance=TOLERANCE)
            name = None
            if match[0]:
                name = KNOWN[0]
            elif match[1]:
                name = KNOWN[1]
            names.add(name or "unknown")
            dists = face_recognition.face_distance(known, enc)
            faces.append(
                {
                    "box": [int(v) for v in box],
                    "name": name,
                    "distances": [round(float(d), 4) for d in dists],
                }
            )
        for name in names:
            counts[name] += 1
        faces_total += len(faces)
        out_frames.append({"frame": index, "t_ms": round(index * 1000 / fps), "faces": faces})
        print(f"\rframe {index}: {len(faces)} face(s)", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    if nb_frames is not None and nb_frames != n:
        print(f"note: ffprobe says {nb_frames} frames, {n} decoded", file=sys.stderr)

    doc = {
        "generator": GENERATOR,
        "source": {
            "video": args.video,
            "known_faces": [os.path.join(known_dir, name + ".png") for name in KNOWN],
            "width": width,
            "height": height,
            "fps": fps,
            "fps_rational": f"{rate.numerator}/{rate.denominator}",
            "num_frames": n,
            "versions": tool_versions(),
            "tolerance": TOLERANCE,
            "detector": DETECTOR,
            "upsample": UPSAMPLE,
            "decoder": "ffmpeg rawvideo rgb24, fps_mode passthrough",
        },
        "summary": {
            "frames_with_faces": len(out_frames),
            "faces": faces_total,
            # frames in which at least one face got that name
            "frames_per_name": counts,
        },
        "frames": out_frames,
    }
    write_json(args.out, doc)

    print(f"wrote {args.out}: {n} frames, {len(out_frames)} with faces, {faces_total} faces")
    for name in list(KNOWN) + ["unknown"]:
        idx = [
            f["frame"] for f in out_frames
            if any((face["name"] or "unknown") == name for face in f["faces"])
        ]
        spans = ", ".join(f"{a}-{b}" if a != b else f"{a}" for a, b in runs(idx))
        print(f"{name}: {counts[name]} frames: {spans or '-'}")


if __name__ == "__main__":
    main()
