#!/usr/bin/env python3
"""Ground truth from hand-annotated keyframes by linear interpolation.

Usage: build_gt.py KEYFRAMES OUT_GT --frames N

KEYFRAMES holds MOT-style rows `frame,id,x,y,w,h,conf` (frame 0-based, pixels,
x,y = top-left corner), written by hand on every 5th frame. For each identity
the box is interpolated linearly between consecutive keyframes of that
identity; it exists from its first to its last keyframe only. conf is 1 for a
person to score and 0 for an "ignore" box (a person entering at the frame
edge or mostly hidden behind another person); an interpolated box is ignore if
either keyframe around it is. Output rows: `frame,id,x,y,w,h,conf,-1,-1,-1`
for frames 0..N-1 (0-based, as Osprey's observations number decoded frames),
boxes rounded to 0.1 px.
"""
import argparse
import collections
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("keyframes")
    ap.add_argument("out")
    ap.add_argument("--frames", type=int, required=True, help="frames in the clip (0..N-1 written)")
    a = ap.parse_args()
    keys = collections.defaultdict(dict)
    with open(a.keyframes) as f:
        for n, line in enumerate(f, 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            p = line.split(",")
            if len(p) != 7:
                sys.exit(f"{a.keyframes}:{n}: expected frame,id,x,y,w,h,conf, got {line!r}")
            fr, tid = int(p[0]), int(p[1])
            box = tuple(float(v) for v in p[2:6])
            conf = int(p[6])
            if box[2] <= 0 or box[3] <= 0 or conf not in (0, 1):
                sys.exit(f"{a.keyframes}:{n}: bad box or conf in {line!r}")
            if fr in keys[tid]:
                sys.exit(f"{a.keyframes}:{n}: identity {tid} annotated twice in frame {fr}")
            keys[tid][fr] = (box, conf)
    rows = []
    for tid, kf in sorted(keys.items()):
        frames = sorted(kf)
        for f0, f1 in zip(frames, frames[1:] + [None]):
            b0, c0 = kf[f0]
            if f1 is None:
                rows.append((f0, tid, b0, c0))
                break
            b1, c1 = kf[f1]
            for fr in range(f0, f1):
                t = (fr - f0) / (f1 - f0)
                box = tuple(v0 + t * (v1 - v0) for v0, v1 in zip(b0, b1))
                # Keyframes themselves keep their own flag; in-betweens are
                # ignore if either end is.
                conf = c0 if fr == f0 else min(c0, c1)
                rows.append((fr, tid, box, conf))
    rows = [r for r in rows if r[0] < a.frames]
    rows.sort(key=lambda r: (r[0], r[1]))
    with open(a.out, "w") as f:
        for fr, tid, (x, y, w, h), conf in rows:
            f.write(f"{fr},{tid},{x:.1f},{y:.1f},{w:.1f},{h:.1f},{conf},-1,-1,-1\n")
    print(f"{a.out}: {len(rows)} boxes, {len(keys)} identities, frames 0..{a.frames - 1}")


if __name__ == "__main__":
    main()
