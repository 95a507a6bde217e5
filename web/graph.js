// The fused graph in onnxruntime-web (WASM): loaded from its bytes, run on one face. Used in the page's
// own thread or, by default, in graph-worker.js so that it runs beside the landmarker.

import * as ort from './vendor/ort/ort.wasm.min.mjs';

/** A session of the fused graph: {inputNames, threads, run(face) -> {task: number[]} and the ms it took}.
 *  `face`: {landmarks: Float32Array(478*3), blendshapes: Float32Array(52), size: [w, h], crop: Uint8Array(S*S)}. */
export async function loadGraph(bytes, wasmPaths, threads) {
  ort.env.wasm.wasmPaths = wasmPaths;
  ort.env.wasm.numThreads = threads;
  const session = await ort.InferenceSession.create(bytes, { executionProviders: ['wasm'] });
  return {
    inputNames: session.inputNames,
    threads,
    async run(face) {
      const t0 = performance.now();
      const feeds = {
        landmarks: new ort.Tensor('float32', face.landmarks, [1, 478, 3]),
        blendshapes: new ort.Tensor('float32', face.blendshapes, [1, face.blendshapes.length]),
        image_sizes: new ort.Tensor('float32', Float32Array.from(face.size), [1, 2]),
      };
      if (session.inputNames.includes('crop')) {
        const side = Math.round(Math.sqrt(face.crop.length));
        feeds.crop = new ort.Tensor('float32', Float32Array.from(face.crop), [1, side, side]);
      }
      const out = await session.run(feeds);
      const outputs = Object.fromEntries(session.outputNames.map((n) => [n, Array.from(out[n].data, Number)]));
      return { outputs, ms: performance.now() - t0 };
    },
  };
}
