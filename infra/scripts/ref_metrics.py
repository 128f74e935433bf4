#!/usr/bin/env python3
"""Reference biometric metrics for libs/osprey-eval/tests/reference.rs.

Usage: ref_metrics.py IN.json OUT.json

Reads the scores the Rust test generated and evaluates them with independent
implementations: pyeer (verification curve and EER) and bob.measure
(verification operating points, open-set identification). It only calls
those packages and reshapes their answers; every definition is theirs. The
Rust test compares the results with osprey-eval's.

IN.json:
  verification: [{genuine, impostor, far: [target...], thresholds: [t...]}]
  identification: [{searches: [{mate, candidates: [{subject_id, score}]}],
                    max_rank, far: [target...], thresholds: [t...], ranks: [r...]}]
  (`thresholds` are osprey-eval's, one per `far` target, to be evaluated here.)
OUT.json holds every float as its IEEE-754 bit pattern (an integer), so the
Rust side can compare exactly without trusting a decimal round trip.

Exits 3 when a reference package cannot be imported.
"""

import json
import math
import os
import struct
import sys


def exact(value):
    """Replaces floats by their IEEE-754 binary64 bit patterns, recursively."""
    if isinstance(value, float):
        return struct.unpack("<Q", struct.pack("<d", value))[0]
    if isinstance(value, dict):
        return {k: exact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [exact(v) for v in value]
    return value


def verification(case, bob, get_eer_stats, np):
    genuine = np.asarray(case["genuine"], dtype=np.float64)
    impostor = np.asarray(case["impostor"], dtype=np.float64)
    st = get_eer_stats(genuine.tolist(), impostor.tolist())

    def rates(threshold):
        far, frr = bob.measure.farfrr(impostor, genuine, threshold)
        return {"far": float(far), "frr": float(frr)}

    def fnmr_at_far(far):
        # pyeer's own FMR operating points are the curve points nearest the
        # target; this reads the curve the other way round: the best FNMR
        # among pyeer's points whose FMR does not exceed the target.
        allowed = st.fnmr[st.fmr <= far]
        return float(allowed.min()) if allowed.size else 1.0

    far_points = []
    for far in case["far"]:
        threshold = float(bob.measure.far_threshold(impostor, genuine, far))
        far_points.append({"threshold": threshold, **rates(threshold)})
    return {
        "pyeer": {
            "eer": float(st.eer),
            "eer_threshold": float(st.eer_th),
            "thresholds": st.thrs.tolist(),
            "fmr": st.fmr.tolist(),
            "fnmr": st.fnmr.tolist(),
            "fnmr_at_far": [fnmr_at_far(far) for far in case["far"]],
        },
        "bob": {
            "eer": float(bob.measure.eer(impostor, genuine)),
            "far_points": far_points,
            "at_thresholds": [rates(t) for t in case["thresholds"]],
        },
    }


def identification(case, bob, np):
    # bob.measure takes one (negatives, positives) pair per search; a
    # non-mated search has positives None. A mate missing from a truncated
    # candidate list scored below everything returned: -inf.
    pairs = []
    for search in case["searches"]:
        mate = search["mate"]
        scores = [(c["subject_id"] == mate, c["score"]) for c in search["candidates"]]
        negatives = np.array([s for is_mate, s in scores if not is_mate], dtype=np.float64)
        positives = None
        if mate is not None:
            positives = np.array([s for is_mate, s in scores if is_mate] or [-math.inf], dtype=np.float64)
        pairs.append((negatives, positives))
    mated = [p for p in pairs if p[1] is not None]
    max_rank = case["max_rank"]
    cmc = bob.measure.cmc(mated)[:max_rank].tolist()
    cmc += cmc[-1:] * (max_rank - len(cmc))

    def at(threshold):
        return {
            "far": bob.measure.false_alarm_rate(pairs, threshold),
            "dir": [bob.measure.detection_identification_rate(pairs, threshold, r) for r in case["ranks"]],
        }

    # As bob.measure.plot.detection_identification_curve sets its thresholds.
    nonmated_top = sorted(float(n.max()) for n, p in pairs if p is None)
    far_points = []
    for far in case["far"]:
        threshold = float(bob.measure.far_threshold(nonmated_top, [], far, True))
        far_points.append({"threshold": threshold, **at(threshold)})
    return {"cmc": cmc, "far_points": far_points, "at_thresholds": [at(t) for t in case["thresholds"]]}


def main():
    if len(sys.argv) != 3:
        sys.exit(f"usage: {sys.argv[0]} IN.json OUT.json")
    os.environ.setdefault("MPLBACKEND", "Agg")  # pyeer imports pyplot
    try:
        import bob.measure
        import numpy as np
        from pyeer.eer_info import get_eer_stats
    except ImportError as e:
        print(
            f"ref_metrics.py: cannot import a reference package ({e}) with {sys.executable}; "
            "run infra/scripts/setup.sh and point OSPREY_PYTHON at the venv's python",
            file=sys.stderr,
        )
        sys.exit(3)

    with open(sys.argv[1]) as f:
        cases = json.load(f)
    out = {
        "verification": [verification(c, bob, get_eer_stats, np) for c in cases["verification"]],
        "identification": [identification(c, bob, np) for c in cases["identification"]],
    }
    with open(sys.argv[2], "w") as f:
        json.dump(exact(out), f)


if __name__ == "__main__":
    main()
