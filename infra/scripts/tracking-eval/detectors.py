#!/usr/bin/env python3
"""Per-frame person detection quality (no tracking) against the hand-written
ground truth, and the HOG baseline's raw detections.

Usage:
  detectors.py hog VIDEO OUT.txt [--frames 150] [--upscale 2] [--min-weight 0]
  detectors.py score GT NAME=PRED.txt[@THRESHOLD] [...] [--frames 150]
                [--min-height 50] [--iou 0.5] [--markdown]

`hog` runs the baseline detector of hog_sort.py (same function, same
settings) on every decoded frame, single-threaded (cv2.setNumThreads(1)), and
writes every detection as a MOT row `frame,-1,x,y,w,h,weight` (frame
0-based); keep --min-weight low so `score` can sweep the threshold. It prints
one JSON line with the mean and median ms per frame (detection only: the
2x enlargement and detectMultiScale; decoding not counted).

`score` reads MOT rows `frame,id,x,y,w,h,score` (id ignored) and scores each
detector per frame, with the rules of score.py: a ground-truth box is scored
("care") when its conf is 1 and it is >= --min-height px tall; any other box
is "don't care". Matching is greedy per frame, as COCO does: detections in
descending score order each take the unmatched care box they overlap most
(IoU >= --iou) and count as true positives; a detection that matches no care
box but an unmatched don't-care box is removed (neither true nor false
positive); any other detection is a false positive. Because each
detection's fate depends only on better-scored ones, one pass gives the
whole precision-recall curve:
  * P, R, F1 at THRESHOLD (the detector's default; detections with score >=
    THRESHOLD count),
  * the best F1 over all thresholds, and the threshold reaching it,
  * AP: area under the precision-recall curve with precision made
    monotone (the maximum precision at any higher recall), all points, as
    PASCAL VOC 2010+ computes it. Recall never reaches 1 for a detector
    that misses someone at every threshold; the missing area counts as 0.
--min-pred-height H drops detections shorter than H px before matching (off
by default), for pipelines that only want people of --min-height and up.
Sanity check: the ground truth scored as predictions gives P = R = AP = 1
(`score GT gt=GT`).
"""
import argparse
import collections
import json
import statistics
import sys
import time

import numpy as np

from score import iou  # the tracking scorer's IoU, so both score boxes alike


def load(path, frames):
    """{frame: [(x, y, w, h, score)]}, frames 0..frames-1 only."""
    out = collections.defaultdict(list)
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            p = line.split(",")
            if len(p) < 6:
                sys.exit(f"{path}:{n}: not a MOT row: {line!r}")
            fr = int(float(p[0]))
            x, y, w, h = (float(v) for v in p[2:6])
            s = float(p[6]) if len(p) > 6 else 1.0
            if frames is None or 0 <= fr < frames:
                out[fr].append((x, y, w, h, s))
    return out


def label(gt, pred, frames, min_height, iou_thr):
    """Every detection as (score, is_tp), don't-care matches left out; and
    the number of care boxes."""
    out, n_care = [], 0
    for fr in frames:
        g = gt.get(fr, [])
        care = [r for r in g if r[4] > 0 and r[3] >= min_height]
        dont = [r for r in g if not (r[4] > 0 and r[3] >= min_height)]
        n_care += len(care)
        p = sorted(pred.get(fr, []), key=lambda r: -r[4])
        ic = iou([r[:4] for r in p], [r[:4] for r in care])
        idc = iou([r[:4] for r in p], [r[:4] for r in dont])
        used_c, used_d = set(), set()
        for i, r in enumerate(p):
            best, bj = iou_thr, None
            for j in range(len(care)):
                if j not in used_c and ic[i, j] >= best:
                    best, bj = ic[i, j], j
            if bj is not None:
                used_c.add(bj)
                out.append((r[4], True))
                continue
            best, bj = iou_thr, None
            for j in range(len(dont)):
                if j not in used_d and idc[i, j] >= best:
                    best, bj = idc[i, j], j
            if bj is not None:
                used_d.add(bj)  # removed: neither TP nor FP
                continue
            out.append((r[4], False))
    return out, n_care


def curve(labels, n_care):
    """Scores (descending), precision and recall after each detection."""
    labels = sorted(labels, key=lambda t: -t[0])
    scores = np.array([s for s, _ in labels])
    tp = np.cumsum([t for _, t in labels])
    fp = np.cumsum([not t for _, t in labels])
    prec = tp / np.maximum(tp + fp, 1)
    rec = tp / max(n_care, 1)
    return scores, prec, rec, tp, fp


def average_precision(prec, rec):
    """All-point interpolated AP (PASCAL VOC 2010+)."""
    if len(prec) == 0:
        return 0.0
    r = np.concatenate([[0.0], rec])
    p = np.concatenate([[0.0], prec])
    p = np.maximum.accumulate(p[::-1])[::-1]  # precision envelope
    return float(np.sum((r[1:] - r[:-1]) * p[1:]))


def score_cmd(a):
    gt = load(a.gt, a.frames)
    if not gt:
        sys.exit(f"no ground truth rows in {a.gt}")
    n = a.frames if a.frames is not None else max(gt) + 1
    rows = []
    for spec in a.preds:
        if "=" not in spec:
            sys.exit(f"expected NAME=path[@threshold], got {spec!r}")
        name, path = spec.split("=", 1)
        thr = None
        if "@" in path:
            path, t = path.rsplit("@", 1)
            thr = float(t)
        pred = load(path, a.frames)
        if a.min_pred_height:
            pred = {fr: [r for r in rs if r[3] >= a.min_pred_height] for fr, rs in pred.items()}
        labels, n_care = label(gt, pred, range(n), a.min_height, a.iou)
        scores, prec, rec, tp, fp = curve(labels, n_care)
        ap = average_precision(prec, rec)
        f1 = 2 * prec * rec / np.maximum(prec + rec, 1e-12)
        # Best F1 at a threshold between distinct scores: the last detection
        # of a run of equal scores.
        last = np.r_[scores[1:] != scores[:-1], True] if len(scores) else np.array([], bool)
        bi = int(np.argmax(np.where(last, f1, -1))) if len(scores) else None
        row = {"name": name, "file": path, "care_boxes": n_care, "AP": ap,
               "max_recall": float(rec[-1]) if len(rec) else 0.0,
               "best_F1": float(f1[bi]) if bi is not None else 0.0,
               "best_F1_threshold": float(scores[bi]) if bi is not None else None}
        if thr is not None:
            k = int(np.sum(scores >= thr))
            t_, f_ = (int(tp[k - 1]), int(fp[k - 1])) if k else (0, 0)
            p_ = t_ / max(t_ + f_, 1)
            r_ = t_ / max(n_care, 1)
            row.update({"threshold": thr, "TP": t_, "FP": f_, "FN": n_care - t_, "P": p_, "R": r_,
                        "F1": 2 * p_ * r_ / (p_ + r_) if p_ + r_ else 0.0})
        rows.append(row)
    care = rows[0]["care_boxes"] if rows else 0
    print(f"ground truth: {a.gt}, frames 0..{n - 1}, {care} scored boxes (conf 1, >= {a.min_height:g} px tall), "
          f"IoU >= {a.iou:g}, greedy matching by score"
          + (f", detections under {a.min_pred_height:g} px dropped" if a.min_pred_height else ""))
    if a.markdown:
        print("| detector | threshold | TP | FP | FN | precision | recall | F1 | best F1 (at threshold) | AP |")
        print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        at = (f"{r['threshold']:g}", r["TP"], r["FP"], r["FN"], f"{r['P']:.3f}", f"{r['R']:.3f}", f"{r['F1']:.3f}") \
            if "threshold" in r else ("-",) * 7
        best = f"{r['best_F1']:.3f} ({r['best_F1_threshold']:.3g})" if r["best_F1_threshold"] is not None else "-"
        if a.markdown:
            print(f"| {r['name']} | " + " | ".join(str(v) for v in at) + f" | {best} | {r['AP']:.3f} |")
        else:
            print(f"{r['name']:>16}: thr {at[0]} TP {at[1]} FP {at[2]} FN {at[3]} P {at[4]} R {at[5]} F1 {at[6]}"
                  f" | best F1 {best} | AP {r['AP']:.3f} | max recall {r['max_recall']:.3f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


def hog_cmd(a):
    import cv2

    from hog_sort import detect  # the baseline's own detector function

    cv2.setNumThreads(1)
    cap = cv2.VideoCapture(a.video)
    if not cap.isOpened():
        sys.exit(f"cannot open video {a.video}")
    hog = cv2.HOGDescriptor()
    hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
    ms, rows = [], 0
    with open(a.out, "w") as out:
        fr = 0
        while a.frames is None or fr < a.frames:
            ok, frame = cap.read()
            if not ok:
                break
            t0 = time.perf_counter()
            dets = detect(hog, frame, a.upscale, a.min_weight)
            ms.append(1000 * (time.perf_counter() - t0))
            for x1, y1, x2, y2, s in dets:
                out.write(f"{fr},-1,{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},{s:.5f},-1,-1,-1\n")
                rows += 1
            fr += 1
    if not ms:
        sys.exit(f"no frames decoded from {a.video}")
    print(json.dumps({"detector": "opencv-hog", "upscale": a.upscale, "min_weight": a.min_weight, "threads": 1,
                      "frames": len(ms), "boxes": rows, "ms_per_frame_mean": round(statistics.mean(ms), 1),
                      "ms_per_frame_median": round(statistics.median(ms), 1), "opencv": cv2.__version__}))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    h = sub.add_parser("hog", help="HOG baseline detections (no tracking) as MOT rows")
    h.add_argument("video")
    h.add_argument("out")
    h.add_argument("--frames", type=int, default=150)
    h.add_argument("--upscale", type=float, default=2.0)
    h.add_argument("--min-weight", type=float, default=0.0, help="keep detections with SVM weight >= this")
    s = sub.add_parser("score", help="precision, recall, F1, AP per detector")
    s.add_argument("gt")
    s.add_argument("preds", nargs="+", help="NAME=path[@threshold]")
    s.add_argument("--frames", type=int, default=150)
    s.add_argument("--min-height", type=float, default=50.0)
    s.add_argument("--iou", type=float, default=0.5)
    s.add_argument("--min-pred-height", type=float, default=0.0,
                   help="drop detections shorter than this (px) first, as a pipeline that only wants people of "
                        "--min-height and up may do; default 0 (keep all)")
    s.add_argument("--markdown", action="store_true")
    s.add_argument("--json", help="also write the rows here")
    a = ap.parse_args()
    (hog_cmd if a.cmd == "hog" else score_cmd)(a)


if __name__ == "__main__":
    main()
