#!/usr/bin/env python3
"""Score person tracks against MOT ground truth with py-motmetrics.

Usage: score.py GT NAME=PRED.txt [NAME=PRED.txt ...] [--min-height 50]
         [--iou 0.5] [--frames N] [--csv OUT.csv] [--explain]

All files are MOT rows `frame,id,x,y,w,h,conf,...` (pixels, top-left corner;
frames numbered the same way in GT and predictions: 0-based here).

Which people count: a GT box is scored ("care") when its conf is 1 and it is
at least --min-height px tall. Every other GT box (conf 0 = ignore, or
shorter than --min-height) is a "don't care" box.

Rule for predictions on don't-care boxes: in each frame, predictions are
first matched one-to-one to all GT boxes (care and don't care together) by
the Hungarian algorithm on IoU, pairs below --iou dropped; a prediction
matched to a don't-care box is removed from that frame, so it is neither a
true nor a false positive, and a don't-care box that is missed is not a
false negative. The remaining predictions and the care boxes go to
py-motmetrics (IoU distance, max 1 - --iou), which reports MOTA, IDF1, ID
switches, FP, FN, precision and recall in the usual CLEAR-MOT / ID sense.

--frames N restricts both files to frames 0..N-1 (the annotated stretch).
--explain prints, per tracker and GT identity, which predicted tracks
covered it in which frames, where it was missed (with the GT box height),
and every false positive, to see where a tracker loses.
"""
import argparse
import collections
import sys

import motmetrics as mm
import numpy as np
from scipy.optimize import linear_sum_assignment


def load(path, frames):
    """{frame: [(id, x, y, w, h, conf)]}"""
    out = collections.defaultdict(list)
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            p = line.split(",")
            if len(p) < 6:
                sys.exit(f"{path}:{n}: not a MOT row: {line!r}")
            fr, tid = int(float(p[0])), int(float(p[1]))
            x, y, w, h = (float(v) for v in p[2:6])
            conf = float(p[6]) if len(p) > 6 else 1.0
            if frames is not None and not 0 <= fr < frames:
                continue
            out[fr].append((tid, x, y, w, h, conf))
    return out


def iou(a, b):
    """IoU of boxes given as rows x, y, w, h: (N,4) x (M,4)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    a, b = np.asarray(a, float), np.asarray(b, float)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 0] + a[:, None, 2], b[None, :, 0] + b[None, :, 2])
    y2 = np.minimum(a[:, None, 1] + a[:, None, 3], b[None, :, 1] + b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None, :] - inter
    return inter / union


def accumulate(gt, pred, frames, min_height, iou_thr):
    acc = mm.MOTAccumulator(auto_id=False)
    removed = 0
    for fr in frames:
        g = gt.get(fr, [])
        p = pred.get(fr, [])
        care = [r for r in g if r[5] > 0 and r[4] >= min_height]
        dont = [r for r in g if not (r[5] > 0 and r[4] >= min_height)]
        allg = care + dont
        keep = list(range(len(p)))
        if dont and p:
            m = iou([r[1:5] for r in p], [r[1:5] for r in allg])
            rows, cols = linear_sum_assignment(-m)
            drop = {r for r, c in zip(rows, cols) if m[r, c] >= iou_thr and c >= len(care)}
            keep = [i for i in keep if i not in drop]
            removed += len(drop)
        p = [p[i] for i in keep]
        dist = mm.distances.iou_matrix([r[1:5] for r in care], [r[1:5] for r in p], max_iou=1 - iou_thr)
        acc.update([r[0] for r in care], [r[0] for r in p], dist, frameid=fr)
    return acc, removed


def ranges(frames):
    """[3,4,5,9] -> '3-5,9'"""
    out, start, prev = [], None, None
    for f in sorted(set(frames)):
        if start is None:
            start = prev = f
        elif f == prev + 1:
            prev = f
        else:
            out.append(f"{start}-{prev}" if prev > start else f"{start}")
            start = prev = f
    if start is not None:
        out.append(f"{start}-{prev}" if prev > start else f"{start}")
    return ",".join(out) or "-"


def explain(name, acc, gt, pred, frames, min_height):
    ev = acc.mot_events.reset_index()
    heights = {(fr, r[0]): r[4] for fr in frames for r in gt.get(fr, [])}
    print(f"\n== {name}: per ground-truth identity (frames it was scored in; predicted ids covering it; misses)")
    for oid in sorted(ev["OId"].dropna().unique(), key=float):
        label = f"{float(oid):g}"
        e = ev[ev["OId"] == oid]
        scored = e[e["Type"].isin(["MATCH", "SWITCH", "MISS", "TRANSFER", "ASCEND", "MIGRATE"])]
        if scored.empty:
            continue
        cover = []
        for hid, g in e[e["Type"].isin(["MATCH", "SWITCH"])].groupby("HId"):
            cover.append((int(g["FrameId"].min()), f"{float(hid):g}@{ranges(g['FrameId'].astype(int))}"))
        miss = e[e["Type"] == "MISS"]["FrameId"].astype(int).tolist()
        mh = [heights.get((f, int(float(oid))), float("nan")) for f in miss]
        sw = e[e["Type"] == "SWITCH"]["FrameId"].astype(int).tolist()
        print(f"GT {label}: frames {ranges(scored['FrameId'].astype(int))}; covered by {' '.join(c for _, c in sorted(cover)) or '-'}"
              f"; missed {len(miss)} ({ranges(miss)}; GT height {min(mh, default=0):.0f}-{max(mh, default=0):.0f} px)"
              f"; switches at {ranges(sw)}")
    fp = ev[ev["Type"] == "FP"]
    print(f"== {name}: {len(fp)} false positives")
    boxes = {(fr, r[0]): r[1:5] for fr in frames for r in pred.get(fr, [])}
    for hid, g in fp.groupby("HId"):
        fr = g["FrameId"].astype(int).tolist()
        hs = [boxes[(f, int(float(hid)))][3] for f in fr if (f, int(float(hid))) in boxes]
        x = [boxes[(f, int(float(hid)))] for f in fr[:1] if (f, int(float(hid))) in boxes]
        print(f"pred {float(hid):g}: frames {ranges(fr)}, height {min(hs, default=0):.0f}-{max(hs, default=0):.0f} px, first box {tuple(round(v) for v in x[0]) if x else '-'}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("gt")
    ap.add_argument("preds", nargs="+", help="NAME=path of a MOT file")
    ap.add_argument("--min-height", type=float, default=50.0)
    ap.add_argument("--iou", type=float, default=0.5)
    ap.add_argument("--frames", type=int, help="score frames 0..N-1 only")
    ap.add_argument("--csv", help="also write the table here")
    ap.add_argument("--explain", action="store_true", help="per-identity coverage, misses and false positives")
    a = ap.parse_args()
    gt = load(a.gt, a.frames)
    if not gt:
        sys.exit(f"no ground truth rows in {a.gt}")
    n = a.frames if a.frames is not None else max(gt) + 1
    frames = range(n)
    accs, names, removed, preds = [], [], {}, {}
    for spec in a.preds:
        if "=" not in spec:
            sys.exit(f"expected NAME=path, got {spec!r}")
        name, path = spec.split("=", 1)
        preds[name] = load(path, a.frames)
        acc, rem = accumulate(gt, preds[name], frames, a.min_height, a.iou)
        accs.append(acc)
        names.append(name)
        removed[name] = rem
    mh = mm.metrics.create()
    metrics = ["num_frames", "mota", "motp", "idf1", "num_switches", "num_false_positives", "num_misses",
               "recall", "precision", "num_unique_objects", "mostly_tracked", "partially_tracked",
               "mostly_lost", "num_fragmentations", "num_predictions"]
    summary = mh.compute_many(accs, metrics=metrics, names=names, generate_overall=False)
    summary["removed_dont_care"] = [removed[nm] for nm in names]
    care = sum(1 for fr in frames for r in gt.get(fr, []) if r[5] > 0 and r[4] >= a.min_height)
    print(f"ground truth: {a.gt}, frames 0..{n - 1}, {care} scored boxes (conf 1, >= {a.min_height:g} px tall), IoU >= {a.iou:g}")
    table = summary.rename(columns={
        "num_frames": "frames", "mota": "MOTA", "motp": "MOTP(1-IoU)", "idf1": "IDF1", "num_switches": "IDsw",
        "num_false_positives": "FP", "num_misses": "FN", "recall": "Rcll", "precision": "Prcn",
        "num_unique_objects": "GT_ids", "mostly_tracked": "MT", "partially_tracked": "PT", "mostly_lost": "ML",
        "num_fragmentations": "Frag", "num_predictions": "pred_boxes", "removed_dont_care": "dont_care_removed"})
    with_pct = table.copy()
    for c in ("MOTA", "IDF1", "Rcll", "Prcn"):
        with_pct[c] = (100 * with_pct[c]).map("{:.1f}".format)
    with_pct["MOTP(1-IoU)"] = with_pct["MOTP(1-IoU)"].map("{:.3f}".format)
    print(with_pct.to_string())
    if a.csv:
        table.to_csv(a.csv)
    if a.explain:
        for name, acc in zip(names, accs):
            explain(name, acc, gt, preds[name], frames, a.min_height)


if __name__ == "__main__":
    main()
