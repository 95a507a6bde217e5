// image -> mesh -> crop -> fused graph -> result, client-side, as meshfer.predict does it in Python:
// MediaPipe's Face Landmarker for the web finds the face (the same attempts, thresholds and
// largest-face rule as meshfer.landmarks, read from /config.json), crop.js cuts the same
// mesh-aligned crop, and onnxruntime-web runs the same fused graph (raw landmarks, blendshapes,
// image size and crop in; every task's output out), so no feature code is written twice.

import { FilesetResolver, FaceLandmarker } from './vendor/tasks-vision/vision_bundle.mjs';
import { alignCrop, roundEven } from './crop.js';
import { loadGraph } from './graph.js';

/** A canvas of `w` x `h` (an OffscreenCanvas where the browser has one). */
function canvas(w, h) {
  if (typeof OffscreenCanvas !== 'undefined') return new OffscreenCanvas(w, h);
  const c = document.createElement('canvas'); c.width = w; c.height = h; return c;
}

export class Pipeline {
  /** Load the page's config, the landmarker(s) and the fused graph (await Pipeline.create()).
   *  `worker`: run the graph in a worker thread, beside the landmarker (default), or in this one.
   *  `threads`: onnxruntime-web's threads (more than one needs a cross-origin isolated page, as
   *  meshfer web serves it); default: the cores left by the landmarker (in a worker) or all, at most 4. */
  static async create(base = './', { worker = true, threads = null } = {}) {
    const p = new Pipeline();
    const root = new URL(base, location.href);
    p.config = await (await fetch(new URL('config.json', root))).json();
    const lm = p.config.landmarker;
    const t0 = performance.now();
    p.fileset = await FilesetResolver.forVisionTasks(new URL('vendor/tasks-vision/wasm', root).href);
    p.modelBuffer = new Uint8Array(await (await fetch(new URL(lm.url, root))).arrayBuffer());
    p.strict = await p.landmarker('IMAGE', lm.min_face_detection_confidence, lm.min_face_presence_confidence, lm.faces_sought);
    p.permissive = null;
    p.video = null;
    const cores = navigator.hardwareConcurrency || 1;
    p.threads = self.crossOriginIsolated ? (threads ?? Math.max(1, Math.min(4, worker ? cores - 1 : cores))) : 1;
    const bytes = new Uint8Array(await (await fetch(new URL(p.config.graph.url, root))).arrayBuffer());
    const wasmPaths = new URL('vendor/ort/', root).href;
    p.graph = worker ? await WorkerGraph.load(new URL('graph-worker.js', import.meta.url), bytes, wasmPaths, p.threads)
      : await loadGraph(bytes, wasmPaths, p.threads);
    p.worker = worker;
    p.loadMs = performance.now() - t0;
    p.tasks = Object.keys(p.config.tasks);
    return p;
  }

  async landmarker(mode, detection, presence, faces) {
    const lm = this.config.landmarker;
    return FaceLandmarker.createFromOptions(this.fileset, {
      baseOptions: { modelAssetBuffer: this.modelBuffer, delegate: 'CPU' },
      runningMode: mode, numFaces: faces, outputFaceBlendshapes: true, outputFacialTransformationMatrixes: true,
      minFaceDetectionConfidence: detection, minFacePresenceConfidence: presence,
      minTrackingConfidence: lm.min_tracking_confidence,
    });
  }

  /** An image, video frame or canvas on a canvas at most max_side long (meshfer.landmarks' limit):
   *  {canvas, width, height, size: [original width, original height], rgba (its pixels, read on first use)}. */
  pixels(source, width, height) {
    const max = this.config.landmarker.max_side, scale = Math.min(1, max / Math.max(width, height));
    const w = Math.max(1, Math.round(width * scale)), h = Math.max(1, Math.round(height * scale));
    const c = canvas(w, h), ctx = c.getContext('2d', { willReadFrequently: true });
    ctx.imageSmoothingQuality = 'high';
    ctx.drawImage(source, 0, 0, w, h);
    let rgba = null;
    return { canvas: c, width: w, height: h, size: [width, height], get rgba() { return (rgba ??= ctx.getImageData(0, 0, w, h).data); } };
  }

  /** Faces in one picture (IMAGE mode): the attempts of meshfer.landmarks in order until one finds a
   *  face; meshes largest first, each {landmarks: Float32Array(478*3), blendshapes: Float32Array(52),
   *  attempt, faces_found}. */
  async detect(px) {
    const lm = this.config.landmarker;
    for (const attempt of lm.attempts) {
      let landmarker = this.strict;
      if (attempt.permissive) {
        this.permissive ??= await this.landmarker('IMAGE', lm.fallback_confidence, lm.fallback_confidence, 1);
        landmarker = this.permissive;
      }
      let image = px.canvas, pad = 0, inner = [px.width, px.height];
      if (attempt.pad > 0) {
        const scale = Math.min(1, lm.max_side / (Math.max(px.width, px.height) * (1 + 2 * attempt.pad)));
        if (scale < 1) inner = [Math.max(1, roundEven(px.width * scale)), Math.max(1, roundEven(px.height * scale))];
        pad = Math.max(1, roundEven(Math.max(...inner) * attempt.pad));
        image = canvas(inner[0] + 2 * pad, inner[1] + 2 * pad);
        const ctx = image.getContext('2d');
        ctx.fillStyle = `rgb(${attempt.fill},${attempt.fill},${attempt.fill})`;
        ctx.fillRect(0, 0, image.width, image.height);
        ctx.imageSmoothingQuality = 'high';
        ctx.drawImage(px.canvas, pad, pad, inner[0], inner[1]);
      }
      const result = landmarker.detect(image);
      if (result.faceLandmarks.length) return this.meshes(result, px.size, attempt.name, pad, inner);
    }
    return [];
  }

  /** One VIDEO-mode frame (the strict landmarker, one face, as meshfer.video). */
  async detectVideo(px, timestampMs) {
    this.video ??= await this.landmarker('VIDEO', this.config.landmarker.min_face_detection_confidence,
      this.config.landmarker.min_face_presence_confidence, 1);
    return this.meshes(this.video.detectForVideo(px.canvas, timestampMs), px.size, 'video', 0, [px.width, px.height]);
  }

  meshes(result, size, attempt, pad, [w, h]) {
    const names = this.config.landmarker.blendshapes;
    const faces = result.faceLandmarks.map((points, i) => {
      const landmarks = new Float32Array(points.length * 3);
      const pw = w + 2 * pad, ph = h + 2 * pad;
      points.forEach((p, j) => {
        landmarks[3 * j] = pad ? (p.x * pw - pad) / w : p.x;
        landmarks[3 * j + 1] = pad ? (p.y * ph - pad) / h : p.y;
        landmarks[3 * j + 2] = pad ? (p.z * pw) / w : p.z;
      });
      const blendshapes = new Float32Array(names.length);
      for (const c of result.faceBlendshapes[i]?.categories ?? []) {
        const j = names.indexOf(c.categoryName);
        if (j >= 0) blendshapes[j] = c.score;
      }
      return { landmarks, blendshapes, attempt, size, faces_found: result.faceLandmarks.length };
    });
    const area = (f) => {
      let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
      for (let j = 0; j < f.landmarks.length; j += 3) {
        x0 = Math.min(x0, f.landmarks[j]); x1 = Math.max(x1, f.landmarks[j]);
        y0 = Math.min(y0, f.landmarks[j + 1]); y1 = Math.max(y1, f.landmarks[j + 1]);
      }
      return (x1 - x0) * size[0] * (y1 - y0) * size[1];
    };
    if (faces.length > 1) faces.sort((a, b) => area(b) - area(a));
    return faces;
  }

  /** The fused graph on one face: {outputs: each task's raw output ({expression: [K], eye: [[C], [C]],
   *  gaze: [2], mouth: [C]}), crop, cropMs, graphMs}; `px` the pixels the face was found in. The crop
   *  is cut at once (it reads the pixels); the graph may run in the worker while the caller goes on. */
  run(face, px) {
    const t0 = performance.now();
    const crop = alignCrop(px.rgba, px.width, px.height, face.landmarks, this.config.crop);
    const cropMs = performance.now() - t0;
    return this.graph.run({ landmarks: face.landmarks, blendshapes: face.blendshapes, size: face.size, crop })
      .then(({ outputs: raw, ms }) => {
        const outputs = {};
        for (const task of this.tasks) {
          if (!(task in raw)) continue;
          const v = raw[task];
          outputs[task] = task === 'eye' ? [v.slice(0, v.length / 2), v.slice(v.length / 2)] : v;
        }
        return { outputs, crop, cropMs, graphMs: ms };
      });
  }

  /** One face's outputs as `meshfer predict --json` prints them. */
  prediction(outputs) {
    const { tasks, eye_sides: sides } = this.config;
    const classify = (labels, p) => ({ label: labels[p.indexOf(Math.max(...p))], probabilities: Object.fromEntries(labels.map((k, i) => [k, p[i]])) });
    const out = {};
    if (outputs.expression) out.expression = classify(tasks.expression.labels, outputs.expression);
    if (outputs.eye) out.eyes = Object.fromEntries(sides.map((s, i) => [s, classify(tasks.eye.labels, outputs.eye[i])]));
    if (outputs.gaze) out.gaze = Object.fromEntries(tasks.gaze.targets.map((k, i) => [k, outputs.gaze[i]]));
    if (outputs.mouth) out.mouth = classify(tasks.mouth.labels, outputs.mouth);
    return out;
  }

  /** A picture (image element, bitmap, canvas) analysed as `meshfer predict` does: the JSON
   *  object of `meshfer predict --json`, plus the face's mesh and crop for drawing. */
  async analyseImage(source, width, height, name = '<image>') {
    const px = this.pixels(source, width, height);
    const faces = await this.detect(px);
    if (!faces.length) return { image: name, face: false, reason: 'no face found' };
    const { outputs, crop } = await this.run(faces[0], px);
    return { image: name, face: true, ...this.prediction(outputs), faces_found: faces[0].faces_found,
      attempt: faces[0].attempt, image_size: px.size, mesh: faces[0], crop, outputs };
  }
}

/** The graph in graph-worker.js, with loadGraph's interface. */
class WorkerGraph {
  static async load(url, bytes, wasmPaths, threads) {
    const g = new WorkerGraph();
    g.worker = new Worker(url, { type: 'module' });
    g.pending = new Map();
    g.next = 0;
    g.worker.onmessage = ({ data }) => {
      const { resolve, reject } = g.pending.get(data.id);
      g.pending.delete(data.id);
      data.type === 'error' ? reject(new Error(`the graph's worker: ${data.message}`)) : resolve(data);
    };
    g.worker.onerror = (e) => { for (const { reject } of g.pending.values()) reject(new Error(`the graph's worker: ${e.message}`)); };
    g.inputNames = (await g.send({ type: 'load', bytes, wasmPaths, threads })).inputNames;
    g.threads = threads;
    return g;
  }

  send(message) {
    const id = this.next++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ ...message, id });
    });
  }

  run(face) { return this.send({ type: 'run', face }); }
}

/** Frames of a video or webcam through the pipeline, in VIDEO mode. With the graph in a worker the
 *  frames are pipelined: the landmarker looks at frame t while the graph runs on frame t-1, so push()
 *  returns the frame before the one given (null at first) and flush() the last one. A finished frame:
 *  {px, timestampMs, t, faces, outputs (null without a face), landmarkerMs, cropMs, graphMs}. */
export class VideoRunner {
  constructor(pipeline, pipelined = pipeline.worker) {
    this.pipeline = pipeline;
    this.pipelined = pipelined;
    this.previous = null;
  }

  /** `timestampMs`: MediaPipe's (increasing); `t`: the frame's time in seconds, kept with it. */
  async push(source, width, height, timestampMs, t = timestampMs / 1000) {
    const t0 = performance.now();
    const px = this.pipeline.pixels(source, width, height);
    const faces = await this.pipeline.detectVideo(px, timestampMs);
    const frame = { px, timestampMs, t, faces, landmarkerMs: performance.now() - t0, cropMs: 0, graphMs: 0 };
    frame.pending = faces.length ? this.pipeline.run(faces[0], px) : Promise.resolve(null);
    if (!this.pipelined) return this.finish(frame);
    const previous = this.previous;
    this.previous = frame;
    return previous ? this.finish(previous) : null;
  }

  async flush() {
    const previous = this.previous;
    this.previous = null;
    return previous ? this.finish(previous) : null;
  }

  async finish(frame) {
    const ran = await frame.pending;
    delete frame.pending;
    frame.outputs = ran ? ran.outputs : null;
    if (ran) { frame.cropMs = ran.cropMs; frame.graphMs = ran.graphMs; }
    return frame;
  }
}
