// The mesh-aligned 48x48 grey face crop of meshfer.crops.align_crop, in JavaScript, for the
// browser page: the same least-squares similarity from nine rigid mesh points to FER-2013's
// framing, the same grey conversion, area shrink and bilinear warp as OpenCV's (fixed-point
// rounding included, as OpenCV 5 does it), so that the page's crops equal Python's.

export const ANCHORS = [33, 133, 362, 263, 168, 6, 2, 98, 327];
const FER_FRAMING = [
  [0.2365, 0.379], [0.3955, 0.3915], [0.6045, 0.3915], [0.7635, 0.379],
  [0.5, 0.369], [0.5, 0.415], [0.5, 0.640], [0.404, 0.6265], [0.596, 0.6265],
];
export const CROP = { size: 48, zoom: 0.92 };

/** The 2x3 similarity [[a, -b, tx], [b, a, ty]] from image pixels to crop pixels.
 *  `landmarks`: 478*3 normalised coordinates (flat); `w`, `h`: the image's size. */
export function cropTransform(landmarks, w, h, spec = CROP) {
  const src = ANCHORS.map((i) => [landmarks[3 * i] * w, landmarks[3 * i + 1] * h]);
  const dst = FER_FRAMING.map(([x, y]) => [(0.5 + spec.zoom * (x - 0.5)) * spec.size,
                                           (0.5 + spec.zoom * (y - 0.5)) * spec.size]);
  const mean = (pts, k) => pts.reduce((s, p) => s + p[k], 0) / pts.length;
  const smx = mean(src, 0), smy = mean(src, 1), dmx = mean(dst, 0), dmy = mean(dst, 1);
  const s = src.map(([x, y]) => [x - smx, y - smy]), d = dst.map(([x, y]) => [x - dmx, y - dmy]);
  const norm = npSum(s.flatMap(([x, y]) => [x * x, y * y]));
  const sd = npSum(s.flatMap(([x, y], i) => [x * d[i][0], y * d[i][1]]));
  const cross = npSum(s.map(([x, y], i) => x * d[i][1] - y * d[i][0]));
  if (!Number.isFinite(norm) || norm < 1e-9) {
    const s = spec.size / Math.max(w, h, 1);
    return [[s, 0, 0], [0, s, 0]];
  }
  const a = sd / norm, b = cross / norm;
  return [[a, -b, dmx - (a * smx - b * smy)], [b, a, dmy - (b * smx + a * smy)]];
}

// NumPy's sum of a short contiguous array, in its order (eight running sums, then the rest), so
// that the transform is the same to the last bit.
function npSum(a) {
  if (a.length < 8) return a.reduce((t, v) => t + v, 0);
  const r = a.slice(0, 8);
  let i = 8;
  for (; i + 8 <= a.length; i += 8) for (let j = 0; j < 8; j++) r[j] += a[i + j];
  let t = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
  for (; i < a.length; i++) t += a[i];
  return t;
}

// OpenCV's RGB -> grey for 8-bit images: fixed point, 15 bits.
function grey(rgba, width, x0, y0, x1, y1) {
  const w = x1 - x0, h = y1 - y0, out = new Uint8Array(w * h);
  for (let y = 0; y < h; y++) {
    let p = 4 * ((y0 + y) * width + x0), q = y * w;
    for (let x = 0; x < w; x++, p += 4) out[q + x] = (rgba[p] * 9798 + rgba[p + 1] * 19235 + rgba[p + 2] * 3735 + 16384) >> 15;
  }
  return out;
}

export const roundEven = (v) => {  // cvRound (and Python's round): to nearest, ties to even
  const r = Math.round(v);
  return (r - v === 0.5 && r % 2 !== 0) ? r - 1 : r;
};

// OpenCV's INTER_AREA shrink by a whole factor k (the block mean, as float times 1/k^2, rounded;
// k = 2 has its own integer path: (sum + 2) >> 2).
function shrink(img, w, h, k) {
  const sw = Math.floor(w / k), sh = Math.floor(h / k), out = new Uint8Array(sw * sh);
  const scale = Math.fround(1 / (k * k));
  for (let y = 0; y < sh; y++) {
    for (let x = 0; x < sw; x++) {
      let sum = 0;
      for (let j = 0; j < k; j++) {
        const row = (y * k + j) * w + x * k;
        for (let i = 0; i < k; i++) sum += img[row + i];
      }
      out[y * sw + x] = k === 2 ? (sum + 2) >> 2 : Math.min(255, roundEven(Math.fround(sum * scale)));
    }
  }
  return out;
}

function invert(m) {
  const [[a, b, c], [d, e, f]] = m;
  let det = a * e - b * d;
  det = det !== 0 ? 1 / det : 0;
  const A11 = e * det, A22 = a * det, A12 = -b * det, A21 = -d * det;
  return [[A11, A12, -A11 * c - A12 * f], [A21, A22, -A21 * c - A22 * f]];
}

// cv2.warpAffine(src, m, (S, S), INTER_LINEAR, BORDER_REPLICATE) on a grey image, as OpenCV 5
// computes it: source coordinates and bilinear weights in float32, rounded to nearest at the end.
function warp(src, w, h, m, size) {
  const f = Math.fround, inv = invert(m).map((row) => row.map(f)), out = new Uint8Array(size * size);
  const clampX = (v) => (v < 0 ? 0 : v >= w ? w - 1 : v), clampY = (v) => (v < 0 ? 0 : v >= h ? h - 1 : v);
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const sx = f(f(f(inv[0][0] * x) + f(inv[0][1] * y)) + inv[0][2]);
      const sy = f(f(f(inv[1][0] * x) + f(inv[1][1] * y)) + inv[1][2]);
      const ix = Math.floor(sx), iy = Math.floor(sy), fx = f(sx - ix), fy = f(sy - iy), gx = f(1 - fx), gy = f(1 - fy);
      const x0 = clampX(ix), x1 = clampX(ix + 1), y0 = clampY(iy), y1 = clampY(iy + 1);
      const top = f(f(src[y0 * w + x0] * gx) + f(src[y0 * w + x1] * fx));
      const bottom = f(f(src[y1 * w + x0] * gx) + f(src[y1 * w + x1] * fx));
      out[y * size + x] = Math.min(255, Math.max(0, roundEven(f(f(top * gy) + f(bottom * fy)))));
    }
  }
  return out;
}

/** The (size*size) Uint8Array grey crop of one face: `rgba` the image's pixels (canvas ImageData
 *  order), `width` x `height` its size, `landmarks` the mesh's 478*3 normalised coordinates. */
export function alignCrop(rgba, width, height, landmarks, spec = CROP) {
  let m = cropTransform(landmarks, width, height, spec);
  const scale = Math.hypot(m[0][0], m[1][0]);
  if (scale < 0.5) {
    const k = Math.floor(1 / scale);
    const inv = invert(m), S = spec.size;
    const pts = [[0, 0], [S, 0], [0, S], [S, S]].map(([x, y]) => [inv[0][0] * x + inv[0][1] * y + inv[0][2],
                                                                 inv[1][0] * x + inv[1][1] * y + inv[1][2]]);
    let x0 = Math.floor(Math.min(...pts.map((p) => p[0])) - 2 * k), y0 = Math.floor(Math.min(...pts.map((p) => p[1])) - 2 * k);
    let x1 = Math.ceil(Math.max(...pts.map((p) => p[0])) + 2 * k), y1 = Math.ceil(Math.max(...pts.map((p) => p[1])) + 2 * k);
    x0 = Math.max(0, x0); y0 = Math.max(0, y0);
    x1 = x0 + Math.floor((Math.min(width, x1) - x0) / k) * k;
    y1 = y0 + Math.floor((Math.min(height, y1) - y0) / k) * k;
    if (x1 - x0 >= 2 * k && y1 - y0 >= 2 * k) {
      const small = shrink(grey(rgba, width, x0, y0, x1, y1), x1 - x0, y1 - y0, k);
      const c = (k - 1) / 2;
      // crop <- image is m; image <- small is [k 0 x0 + c; 0 k y0 + c] (pixel centres)
      m = [[m[0][0] * k, m[0][1] * k, m[0][0] * (x0 + c) + m[0][1] * (y0 + c) + m[0][2]],
           [m[1][0] * k, m[1][1] * k, m[1][0] * (x0 + c) + m[1][1] * (y0 + c) + m[1][2]]];
      return warp(small, (x1 - x0) / k, (y1 - y0) / k, m, S);
    }
  }
  return warp(grey(rgba, width, 0, 0, width, height), width, height, m, spec.size);
}
