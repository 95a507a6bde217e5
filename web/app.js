// The page: image files, a video file or the webcam in; the mesh, the label, the probabilities,
// eyes/mouth/gaze, a live timeline and the temporal summary out. The work is pipeline.js's and
// temporal.js's; this file only draws. `window.meshfer` lets scripts (the tests, the benchmark)
// drive the page and read its results.

import { Pipeline, VideoRunner } from './pipeline.js';
import { Stream, formatSummary } from './temporal.js';

const COLOURS = { angry: '#e53935', disgusted: '#8e24aa', fear: '#5e35b1', happy: '#fdd835', neutral: '#90a4ae',
  sad: '#1e88e5', surprised: '#fb8c00' };
const $ = (id) => document.getElementById(id);
const view = $('view'), ctx = view.getContext('2d');
const status = (text) => { $('status').textContent = text; };

let pipeline = null, stream = null, running = null;

function drawFrame(source, width, height, result) {
  const scale = Math.min(1, 960 / Math.max(width, height));
  view.width = Math.round(width * scale); view.height = Math.round(height * scale);
  ctx.drawImage(source, 0, 0, view.width, view.height);
  if (!result?.face) {
    ctx.fillStyle = '#fff'; ctx.font = '16px system-ui'; ctx.fillText('no face', 10, 24);
    return;
  }
  const lm = result.mesh.landmarks, W = view.width, H = view.height;
  ctx.fillStyle = 'rgba(0, 230, 118, 0.9)';
  const r = Math.max(1.5, Math.min(W, H) / 250);
  let x0 = Infinity, y0 = Infinity, x1 = -Infinity;
  for (let j = 0; j < lm.length; j += 3) {
    const x = lm[j] * W, y = lm[j + 1] * H;
    x0 = Math.min(x0, x); y0 = Math.min(y0, y); x1 = Math.max(x1, x);
    ctx.fillRect(x - r / 2, y - r / 2, r, r);
  }
  if (result.expression) {
    const { label, probabilities } = result.expression;
    const text = `${label} ${(100 * probabilities[label]).toFixed(0)}%`;
    ctx.font = `${Math.min(28, Math.max(14, Math.round((x1 - x0) / 10)))}px system-ui`;
    const w = ctx.measureText(text).width;
    ctx.fillStyle = 'rgba(0,0,0,0.6)'; ctx.fillRect(x0, Math.max(0, y0 - 28), w + 10, 26);
    ctx.fillStyle = COLOURS[label] ?? '#fff'; ctx.fillText(text, x0 + 5, Math.max(20, y0 - 8));
  }
}

function drawPanel(result) {
  const labels = pipeline.config.tasks.expression?.labels ?? [];
  const p = result?.face ? result.expression?.probabilities : null;
  $('bars').innerHTML = labels.map((k) => {
    const v = p ? p[k] : 0;
    return `<div class="bar" data-label="${k}"><span>${k}</span><span class="track"><span class="fill" style="display:block;width:${(100 * v).toFixed(1)}%;background:${COLOURS[k] ?? '#888'}"></span></span><span class="value">${p ? v.toFixed(3) : ''}</span></div>`;
  }).join('');
  $('expression-label').textContent = result?.face ? result.expression?.label ?? '' : 'no face';
  const rows = [];
  if (result?.face) {
    if (result.eyes) rows.push(['eyes', Object.entries(result.eyes).map(([s, c]) => `${s} ${c.label}`).join(', ')]);
    if (result.mouth) rows.push(['mouth', `${result.mouth.label} (p open ${(result.mouth.probabilities[pipeline.config.mouth_open] ?? NaN).toFixed(2)})`]);
    if (result.gaze) rows.push(['gaze', `x ${result.gaze.x.toFixed(2)}, y ${result.gaze.y.toFixed(2)}`]);
    rows.push(['face found by', `${result.attempt}${result.faces_found > 1 ? ` (${result.faces_found} faces, the largest)` : ''}`]);
  }
  $('companions').tBodies[0].innerHTML = rows.map(([k, v]) => `<tr><td>${k}</td><td>${v}</td></tr>`).join('');
  drawGaze(result?.face ? result.gaze : null);
}

function drawGaze(gaze) {
  const c = $('gaze'), g = c.getContext('2d'), box = pipeline.config.temporal.attention_box;
  const [lo, hi] = pipeline.config.gaze_range, S = c.width;
  const px = (v) => ((v - lo) / (hi - lo)) * S, py = (v) => S - px(v);
  g.clearRect(0, 0, S, S);
  g.strokeStyle = '#90caf9'; g.strokeRect(px(box.xmin), py(box.ymax), px(box.xmax) - px(box.xmin), py(box.ymin) - py(box.ymax));
  g.strokeStyle = '#eee'; g.beginPath(); g.moveTo(S / 2, 0); g.lineTo(S / 2, S); g.moveTo(0, S / 2); g.lineTo(S, S / 2); g.stroke();
  if (gaze) { g.fillStyle = '#d81b60'; g.beginPath(); g.arc(px(gaze.x), py(gaze.y), 5, 0, 2 * Math.PI); g.fill(); }
}

function drawTimeline() {
  const c = $('timeline'), g = c.getContext('2d'), W = c.width, H = c.height - 14;
  g.clearRect(0, 0, c.width, c.height);
  const records = stream?.records ?? [];
  if (!records.length) return;
  const tEnd = records[records.length - 1].timestamp_s, span = 30, tx = (t) => W - ((tEnd - t) / span) * W;
  const recent = records.filter((r) => tEnd - r.timestamp_s <= span);
  const line = (colour, value, dash = []) => {
    g.strokeStyle = colour; g.setLineDash(dash); g.beginPath();
    let pen = false;
    for (const r of recent) {
      const v = value(r);
      if (v == null || Number.isNaN(v)) { pen = false; continue; }
      const x = tx(r.timestamp_s), y = H - v * (H - 2) - 1;
      pen ? g.lineTo(x, y) : g.moveTo(x, y); pen = true;
    }
    g.stroke(); g.setLineDash([]);
  };
  for (const k of pipeline.config.tasks.expression?.labels ?? []) line(COLOURS[k] ?? '#888', (r) => r.expression_probabilities?.[k]);
  line('#000', (r) => (r.eye_closed ? (r.eye_closed.left + r.eye_closed.right) / 2 : null), [2, 2]);
  line('#00897b', (r) => r.mouth_open, [6, 3]);
  g.fillStyle = '#666'; g.font = '10px system-ui';
  g.fillText(`${span} s ago`, 2, c.height - 2);
  g.fillText('now', W - 20, c.height - 2);
  g.fillText('- - eyes closed   — — mouth open', W / 2 - 70, c.height - 2);
}

const publicResult = (r) => { const { mesh, crop, outputs, ...rest } = r; return rest; };

async function analyseFile(file) {
  // No colour management, as Python reads the pixels (PIL, OpenCV); EXIF orientation applied, as in Python.
  const bitmap = await createImageBitmap(file, { colorSpaceConversion: 'none' }).catch(() => null);
  if (!bitmap) return { image: file.name, face: false, reason: 'unreadable image' };
  const result = await pipeline.analyseImage(bitmap, bitmap.width, bitmap.height, file.name);
  drawFrame(bitmap, bitmap.width, bitmap.height, result);
  drawPanel(result);
  return result;
}

function addImageRow(r) {
  $('images').hidden = false;
  const tr = document.createElement('tr');
  const cell = (text) => { const td = document.createElement('td'); td.textContent = text; tr.append(td); };
  cell(r.image);
  if (!r.face) { cell(r.reason); } else {
    cell(r.expression?.label ?? ''); cell(r.expression ? r.expression.probabilities[r.expression.label].toFixed(3) : '');
    cell(r.eyes ? `${r.eyes.left.label} / ${r.eyes.right.label}` : ''); cell(r.mouth?.label ?? '');
    cell(r.gaze ? `${r.gaze.x.toFixed(2)}, ${r.gaze.y.toFixed(2)}` : '');
  }
  $('images').querySelector('tbody').append(tr);
}

/** Analyse frames of a <video> (webcam or file) until stopped or the file ends. */
async function runVideo(video, label) {
  stream = new Stream(pipeline.config);
  const runner = new VideoRunner(pipeline);
  const started = performance.now();
  const totals = { frames: 0, landmarker: 0, crop: 0, graph: 0 };
  let lastMs = -1;
  $('live').hidden = false;
  const run = { stop: false, finish: null };
  running = run;
  $('stop').disabled = false; $('webcam').disabled = true;

  const show = (frame) => {  // a finished frame: the record, the picture, the panel
    if (!frame || run.stop) return;
    Object.assign(totals, { frames: totals.frames + 1, landmarker: totals.landmarker + frame.landmarkerMs,
      crop: totals.crop + frame.cropMs, graph: totals.graph + frame.graphMs });
    const record = stream.push(frame.t, frame.outputs);
    let result = { face: false };
    if (frame.outputs) {
      result = { face: true, ...pipeline.prediction(frame.outputs), mesh: frame.faces[0], attempt: 'video', faces_found: frame.faces[0].faces_found };
      // Video shows the smoothed expression (label and bars), as meshfer video does.
      if (record.expression) result.expression = { label: record.expression, probabilities: record.expression_probabilities };
    }
    drawFrame(frame.px.canvas, frame.px.width, frame.px.height, result);
    drawPanel(result);
    drawTimeline();
    const n = totals.frames, fps = n / ((performance.now() - started) / 1000);
    $('summary').textContent = formatSummary(stream.summary(fps));
    status(`${label}: ${n} frames, ${fps.toFixed(1)} fps (per frame: landmarker ${(totals.landmarker / n).toFixed(1)} ms, ` +
      `crop ${(totals.crop / n).toFixed(1)} ms, graph ${(totals.graph / n).toFixed(1)} ms${runner.pipelined ? ' beside it' : ''})`);
    window.meshfer.stats = { frames: n, fps, landmarker_ms: totals.landmarker / n, crop_ms: totals.crop / n,
      graph_ms: totals.graph / n, pipelined: runner.pipelined };
  };

  await new Promise((resolve) => {
    run.finish = resolve;  // stop() ends the run at once: a stopped camera sends no more frames
    let inflight = Promise.resolve();
    // The last frames: the one being looked at, then the one the graph still holds.
    video.addEventListener('ended', () => inflight.then(() => runner.flush()).then(show).then(resolve), { once: true });
    const step = async (mediaTime = null) => {
      if (run.stop || video.ended) return;
      if (video.readyState >= 2 && video.videoWidth) {
        const now = performance.now(), ts = Math.max(Math.round(now), lastMs + 1);
        lastMs = ts;
        // A video file's frames carry their own time (as meshfer video reads a file's); the webcam's is the clock's.
        const t = video.srcObject || mediaTime === null ? (now - started) / 1000 : mediaTime;
        inflight = runner.push(video, video.videoWidth, video.videoHeight, ts, t);
        show(await inflight);
      }
      if (video.requestVideoFrameCallback) video.requestVideoFrameCallback((_, meta) => step(meta.mediaTime));
      else requestAnimationFrame(() => step());
    };
    step();
  });
  $('stop').disabled = true; $('webcam').disabled = false;
  return stream.summary(window.meshfer.stats?.fps ?? null, run.stop);
}

async function startWebcam() {
  const video = $('video');
  video.srcObject = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
  await video.play();
  return runVideo(video, 'webcam');
}

function stop() {
  if (running) { running.stop = true; running.finish?.(); running = null; }
  const video = $('video');
  video.srcObject?.getTracks().forEach((t) => t.stop());
  video.srcObject = null;
  video.pause();
}

async function onFiles(files) {
  stop();
  const list = [...files];
  const videoFile = list.find((f) => f.type.startsWith('video/'));
  if (videoFile) {
    const video = $('video');
    video.src = URL.createObjectURL(videoFile);
    await video.play();
    return runVideo(video, videoFile.name);
  }
  $('images').querySelector('tbody').innerHTML = '';
  $('live').hidden = true;
  const results = [];
  for (const [i, file] of list.entries()) {
    status(`image ${i + 1} of ${list.length}: ${file.name}`);
    results.push(publicResult(await analyseFile(file)));
    addImageRow(results[results.length - 1]);
  }
  status(`${list.length} image${list.length === 1 ? '' : 's'} analysed`);
  return results;
}

window.meshfer = {
  ready: (async () => {
    try {
      const query = new URLSearchParams(location.search);  // ?threads=N, ?worker=0: to compare
      pipeline = await Pipeline.create('./', { worker: query.get('worker') !== '0',
        threads: query.has('threads') ? Number(query.get('threads')) : null });
      drawPanel(null);
      status(`ready (models loaded in ${(pipeline.loadMs / 1000).toFixed(1)} s): open an image, a video or the webcam`);
      $('webcam').disabled = false;
      window.meshfer.pipeline = pipeline;
      return true;
    } catch (e) {
      status(`could not load the models: ${e}`);
      throw e;
    }
  })(),
  /** Analyse an image at a URL (as `meshfer predict --json` would); draws it too. */
  async analyseUrl(url, name = url) {
    const blob = await (await fetch(url)).blob();
    const result = await analyseFile(new File([blob], name, { type: blob.type }));
    return publicResult(result);
  },
  startWebcam, stop,
  get summary() { return stream ? stream.summary(window.meshfer.stats?.fps ?? null) : null; },
  get records() { return stream ? stream.records : []; },
  stats: null,
};

// lastRun: the promise of what the last input gives (a list of image results, or a video's summary).
$('file').addEventListener('change', (e) => { window.meshfer.lastRun = onFiles(e.target.files); });
$('webcam').addEventListener('click', () => startWebcam().catch((e) => status(`webcam: ${e.message ?? e}`)));
$('stop').addEventListener('click', stop);
