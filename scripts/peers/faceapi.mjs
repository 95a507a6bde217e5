// face-api.js (@vladmandic/face-api) expression recognition on raw RGB images read from stdin, for
// scripts/bench_peers.py. Input: repeated [uint32 height, uint32 width, height*width*3 bytes], little
// endian. Output: one JSON line per image: the largest face's expression probabilities (face-api's
// labels) or {"face": false}, and the milliseconds spent (detection + landmarks + expressions).
import { createRequire } from 'module';
import path from 'path';
import { fileURLToPath } from 'url';

const require = createRequire(import.meta.url);
const here = path.dirname(fileURLToPath(import.meta.url));
const tf = require('@tensorflow/tfjs');
const wasm = require('@tensorflow/tfjs-backend-wasm');
const faceapi = require('@vladmandic/face-api/dist/face-api.node-wasm.js');

// --whole: the expression network on the whole image (no detection); otherwise SSD MobileNet v1, the
// 68 landmarks and the expression network on the largest face, face-api's usual chain.
const wholeImage = process.argv.includes('--whole');

async function main() {
  wasm.setWasmPaths(path.join(here, 'node_modules/@tensorflow/tfjs-backend-wasm/dist/') + '/');
  wasm.setThreadsCount?.(1);
  await tf.setBackend('wasm');
  await tf.ready();
  const models = path.join(here, 'node_modules/@vladmandic/face-api/model');
  await faceapi.nets.ssdMobilenetv1.loadFromDisk(models);
  await faceapi.nets.faceLandmark68Net.loadFromDisk(models);
  await faceapi.nets.faceExpressionNet.loadFromDisk(models);
  const options = new faceapi.SsdMobilenetv1Options({ minConfidence: 0.5 });
  process.stderr.write(`face-api ${faceapi.version} on tfjs ${tf.version.tfjs}, backend ${tf.getBackend()}\n`);

  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  const data = Buffer.concat(chunks);
  let offset = 0;
  while (offset < data.length) {
    const h = data.readUInt32LE(offset);
    const w = data.readUInt32LE(offset + 4);
    offset += 8;
    const pixels = new Uint8Array(data.buffer, data.byteOffset + offset, h * w * 3);
    offset += h * w * 3;
    const t0 = performance.now();
    const input = tf.tensor3d(pixels, [h, w, 3], 'int32');
    if (wholeImage) {
      // the photo is the face (a face crop, as FER-2013 and muxspace photos are): the expression network alone
      const expressions = await faceapi.nets.faceExpressionNet.predictExpressions(input);
      input.dispose();
      process.stdout.write(JSON.stringify({ face: true, faces: 1, expressions, ms: performance.now() - t0 }) + '\n');
      continue;
    }
    const faces = await faceapi.detectAllFaces(input, options).withFaceLandmarks().withFaceExpressions();
    input.dispose();
    const ms = performance.now() - t0;
    if (!faces.length) {
      process.stdout.write(JSON.stringify({ face: false, ms }) + '\n');
      continue;
    }
    const area = (f) => f.detection.box.width * f.detection.box.height;
    const best = faces.reduce((a, b) => (area(b) > area(a) ? b : a));
    process.stdout.write(JSON.stringify({ face: true, faces: faces.length, expressions: best.expressions, ms }) + '\n');
  }
}

main().catch((err) => { process.stderr.write(`faceapi.mjs: ${err.stack || err}\n`); process.exit(2); });
