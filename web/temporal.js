// meshfer.temporal in JavaScript: smoothing, blinks, PERCLOS, speaking time, attention and the
// summary of a stream, with the same definitions; the constants come from the package (the page's
// /config.json, TemporalConfig). tests/test_web.py runs both on the same sequences.

/** Exponential moving average of a vector; update(null) (no face) restarts it. */
export class ExponentialSmoother {
  constructor(alpha) { this.alpha = alpha; this.state = null; }
  update(values) {
    if (values == null) { this.state = null; return null; }
    if (this.state === null || this.state.length !== values.length) this.state = Array.from(values);
    else this.state = this.state.map((s, i) => s * (1 - this.alpha) + this.alpha * values[i]);
    return this.state.slice();
  }
  reset() { this.state = null; }
}

/** Streaming, debounced blink counter for one eye (or for 'both eyes closed'). */
export class BlinkCounter {
  constructor(minClosedFrames = 1, minOpenFrames = 2, maxBlinkS = null) {
    Object.assign(this, { minClosedFrames, minOpenFrames, maxBlinkS });
    this.blinks = []; this.longClosures = [];
    this.seenOpen = false; this.closedFrames = 0; this.closureStart = null;
    this.openRun = 0; this.openStart = null; this.frame = -1;
  }
  get count() { return this.blinks.length; }
  update(closed, timestampS = null) {
    this.frame += 1;
    const t = timestampS === null ? this.frame : timestampS;
    if (closed === null || closed === undefined) return null;
    if (closed) {
      if (this.closedFrames === 0) this.closureStart = [this.frame, t];
      this.closedFrames += 1; this.openRun = 0; this.openStart = null;
      return null;
    }
    if (this.openRun === 0) this.openStart = [this.frame, t];
    this.openRun += 1;
    if (this.openRun < this.minOpenFrames) return null;
    let event = null;
    if (this.closedFrames && this.seenOpen && this.closedFrames >= this.minClosedFrames) {
      event = { startFrame: this.closureStart[0], endFrame: this.openStart[0], startS: this.closureStart[1], endS: this.openStart[1] };
      if (this.maxBlinkS !== null && event.endS - event.startS > this.maxBlinkS) { this.longClosures.push(event); event = null; }
      else this.blinks.push(event);
    }
    this.closedFrames = 0; this.closureStart = null; this.seenOpen = true;
    return event;
  }
}

export const bothClosed = (left, right) => (left == null || right == null ? null : left && right);

export function perclos(closed) {
  const known = closed.filter((c) => c != null);
  return known.length ? known.filter(Boolean).length / known.length : null;
}

export function mouthChanges(mouthOpen, timestamps, minFrames = 2) {
  const changes = [];
  let state = null, runState = null, runLen = 0, runStart = 0;
  mouthOpen.forEach((value, i) => {
    if (value == null) return;
    if (value === runState) runLen += 1;
    else { runState = value; runLen = 1; runStart = timestamps[i]; }
    if (runLen === minFrames && runState !== state) {
      if (state !== null) changes.push(runStart);
      state = runState;
    }
  });
  return changes;
}

export function speakingSpans(mouthOpen, timestamps, minFrames = 2, maxGapS = 1.0, minChanges = 3) {
  const spans = [];
  let chain = [];
  for (const t of [...mouthChanges(mouthOpen, timestamps, minFrames), Infinity]) {
    if (chain.length && t - chain[chain.length - 1] > maxGapS) {
      if (chain.length >= minChanges) spans.push([chain[0], chain[chain.length - 1]]);
      chain = [];
    }
    chain.push(t);
  }
  return spans;
}

export function attentionShare(gaze, box) {
  const known = gaze.filter((g) => g != null && !Number.isNaN(g[0]) && !Number.isNaN(g[1]));
  if (!known.length) return null;
  const inside = known.filter(([x, y]) => x >= box.xmin && x <= box.xmax && y >= box.ymin && y <= box.ymax);
  return inside.length / known.length;
}

export function expressionShares(labels, order = []) {
  const known = labels.filter((l) => l != null);
  const extra = [...new Set(known)].filter((l) => !order.includes(l)).sort();
  const out = {};
  for (const name of [...order, ...extra]) out[name] = known.length ? known.filter((l) => l === name).length / known.length : 0;
  return out;
}

const argmax = (values) => values.reduce((best, v, i) => (v > values[best] ? i : best), 0);
const median = (v) => { const s = [...v].sort((a, b) => a - b), m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };

/** The per-frame records of a stream, built from the fused graph's outputs as
 *  meshfer.video.VideoAnalyzer builds them (smoothed expression and gaze, streaming blink count). */
export class Stream {
  /** `config`: the page's /config.json. */
  constructor(config) {
    this.config = config;
    const c = config.temporal;
    this.records = [];
    this.expression = new ExponentialSmoother(c.smoothing);
    this.gaze = new ExponentialSmoother(c.smoothing);
    this.blinks = new BlinkCounter(c.min_closed_frames, c.min_open_frames, c.max_blink_s);
  }

  /** Add one frame: `outputs` the graph's outputs for its face ({expression: [K], eye: [[C], [C]],
   *  gaze: [2], mouth: [C]}), or null without a face. Returns the frame's record. */
  push(timestampS, outputs) {
    const { tasks, eye_sides: sides, eye_closed: CLOSED, mouth_open: OPEN } = this.config;
    const record = { frame: this.records.length, timestamp_s: timestampS, face: outputs != null, expression: null,
      expression_probabilities: null, eyes: null, eye_closed: null, gaze: null, mouth: null, mouth_open: null, blinks: 0 };
    if (outputs == null) {
      this.expression.reset(); this.gaze.reset(); this.blinks.update(null, timestampS);
    } else {
      if (outputs.expression) {
        const labels = tasks.expression.labels, s = this.expression.update(outputs.expression);
        record.expression_probabilities = Object.fromEntries(labels.map((k, i) => [k, s[i]]));
        record.expression = labels[argmax(s)];
      }
      if (outputs.eye) {
        const labels = tasks.eye.labels, closed = labels.indexOf(CLOSED);
        record.eyes = Object.fromEntries(sides.map((side, i) => [side, labels[argmax(outputs.eye[i])]]));
        record.eye_closed = Object.fromEntries(sides.map((side, i) => [side, closed >= 0 ? outputs.eye[i][closed] : NaN]));
      }
      if (outputs.gaze) {
        const t = tasks.gaze.targets, g = this.gaze.update([outputs.gaze[t.indexOf('x')], outputs.gaze[t.indexOf('y')]]);
        record.gaze = [g[0], g[1]];
      }
      if (outputs.mouth) {
        const labels = tasks.mouth.labels, open = labels.indexOf(OPEN);
        record.mouth = labels[argmax(outputs.mouth)];
        record.mouth_open = open >= 0 ? outputs.mouth[open] : NaN;
      }
      this.blinks.update(eyesClosed(record, CLOSED), timestampS);
    }
    record.blinks = this.blinks.count;
    this.records.push(record);
    return record;
  }

  /** The summary of the frames so far (meshfer.temporal.summarize). */
  summary(processingFps = null, interrupted = false) {
    return summarize(this.records, this.config, processingFps, interrupted);
  }
}

const eyeIsClosed = (r, side, CLOSED) => (r.eyes == null ? null : r.eyes[side] === CLOSED);
const eyesClosed = (r, CLOSED) => bothClosed(eyeIsClosed(r, 'left', CLOSED), eyeIsClosed(r, 'right', CLOSED));

/** meshfer.temporal.summarize over records shaped as Stream makes them (snake_case keys, as
 *  Python's FrameRecord and Summary.to_dict). */
export function summarize(records, config, processingFps = null, interrupted = false) {
  const c = config.temporal, CLOSED = config.eye_closed, OPEN = config.mouth_open;
  const t = records.map((r) => r.timestamp_s);
  const dt = t.length > 1 ? median(t.slice(1).map((v, i) => v - t[i])) : 0;
  const duration = t.length ? t[t.length - 1] - t[0] + dt : 0;
  const expressions = records.map((r) => r.expression);
  const order = config.tasks.expression ? config.tasks.expression.labels : [];
  const shares = expressions.some((e) => e != null) ? expressionShares(expressions, order) : {};

  const count = (states) => {
    const counter = new BlinkCounter(c.min_closed_frames, c.min_open_frames, c.max_blink_s);
    states.forEach((s, i) => counter.update(s, t[i]));
    return counter;
  };
  const both = records.map((r) => eyesClosed(r, CLOSED));
  const eyesKnown = both.filter((s) => s != null).length;
  let blinks = null, left = null, right = null, longClosures = null, bpm = null, events = [];
  if (eyesKnown) {
    const counter = count(both);
    left = count(records.map((r) => eyeIsClosed(r, 'left', CLOSED))).count;
    right = count(records.map((r) => eyeIsClosed(r, 'right', CLOSED))).count;
    const observedMin = (eyesKnown * dt) / 60;
    bpm = observedMin > 0 ? counter.count / observedMin : null;
    blinks = counter.count; events = counter.blinks; longClosures = counter.longClosures.length;
  }
  const mouth = records.map((r) => (r.mouth == null ? null : r.mouth === OPEN));
  let spans = null, speaking = null;
  if (mouth.some((m) => m != null)) {
    spans = speakingSpans(mouth, t, c.min_mouth_frames, c.max_speech_gap_s, c.min_speech_changes);
    speaking = spans.reduce((s, [a, b]) => s + (b - a), 0);
  }
  return {
    frames: records.length, faces: records.filter((r) => r.face).length, duration_s: duration,
    expression_shares: shares, blinks, blinks_left: left, blinks_right: right, long_closures: longClosures,
    blinks_per_minute: bpm, perclos: perclos(both), speaking_s: speaking, speaking_spans: spans,
    attention: attentionShare(records.map((r) => r.gaze), c.attention_box),
    blink_events: events.map((b) => [b.startS, b.endS]), processing_fps: processingFps, interrupted,
  };
}

/** A readable multi-line summary (meshfer.temporal.Summary.format). */
export function formatSummary(s) {
  const pct = (v) => (v == null ? 'n/a' : `${(100 * v).toFixed(1)}%`);
  const share = s.frames ? s.faces / s.frames : 0;
  const lines = [
    `frames:          ${s.frames} (${s.duration_s.toFixed(1)} s` + (s.processing_fps ? `, processed at ${s.processing_fps.toFixed(1)} fps` : '') + ')',
    `faces found:     ${s.faces} (${pct(share)})`,
  ];
  const shares = Object.entries(s.expression_shares);
  if (shares.length) {
    const text = shares.filter(([, v]) => v > 0).sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${pct(v)}`).join(', ');
    lines.push(`expressions:     ${text || 'n/a'}`);
  } else lines.push('expressions:     n/a (no expression model)');
  if (s.blinks == null) lines.push('blinks:          n/a (no eye model or no face)');
  else {
    const bpm = s.blinks_per_minute == null ? 'n/a' : s.blinks_per_minute.toFixed(1);
    const extra = s.long_closures ? `, ${s.long_closures} long closures` : '';
    lines.push(`blinks:          ${s.blinks} (${bpm} per minute; left eye ${s.blinks_left}, right eye ${s.blinks_right}${extra})`);
  }
  lines.push(`PERCLOS:         ${pct(s.perclos)}`);
  if (s.speaking_s == null) lines.push('speaking time:   n/a (no mouth model or no face)');
  else lines.push(`speaking time:   ${s.speaking_s.toFixed(1)} s in ${(s.speaking_spans || []).length} spans`);
  lines.push(`attention:       ${pct(s.attention)}`);
  if (s.interrupted) lines.push('(stopped early: these figures cover the frames processed)');
  return lines.join('\n');
}
