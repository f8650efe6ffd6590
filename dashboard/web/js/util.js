// Pure helpers of the losslens page: number and time formatting, colours, smoothing, robust
// ranges, client-side M4 buckets, the view <-> URL mapping and CSV. No DOM here, so that
// test/unit.test.mjs runs them under node.

// ---------------------------------------------------------------- numbers

/** A JSON number, or "nan" / "inf" / "-inf" (losslens::json_number) as a JS number. */
export const toNumber = (v) => (typeof v === 'number' ? v
  : v === 'inf' ? Infinity : v === '-inf' ? -Infinity : v == null ? NaN : Number(v));

/** A value for people: 5 significant digits, exponent outside [1e-3, 1e4). */
export function fmt(v) {
  if (typeof v !== 'number') return String(v);
  if (Number.isNaN(v)) return 'nan';
  if (!Number.isFinite(v)) return v > 0 ? 'inf' : '-inf';
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e4 || a < 1e-3)) return v.toExponential(3).replace(/\.?0+e/, 'e');
  return String(+v.toPrecision(5));
}

/**
 * Axis tick labels for `splits` spaced `incr` apart, in one format for the whole axis (fixed
 * decimals, or a mantissa-exponent form for very large or small magnitudes) with enough
 * digits to tell neighbours apart. uPlot passes null for log ticks it leaves unlabelled: they
 * stay null (unlabelled), never the text "null".
 */
export function fmtTicks(splits, incr) {
  const big = splits.reduce((m, v) => (v == null ? m : Math.max(m, Math.abs(v))), 0);
  if (big >= 1e5 || (big > 0 && big < 1e-3)) {
    const e = Math.floor(Math.log10(big) + 1e-9);
    const digits = incr > 0 ? Math.max(0, Math.min(6, Math.ceil(-Math.log10(incr / 10 ** e) - 1e-9))) : 2;
    return splits.map((v) => {
      if (v == null) return null;
      if (v === 0) return '0';
      const ee = Math.floor(Math.log10(Math.abs(v)) + 1e-9);
      const d = Math.max(0, digits - (e - ee));
      return String(+(v / 10 ** ee).toFixed(d)) + 'e' + ee;
    });
  }
  const decimals = decimalsOf(incr);
  return splits.map((v) => (v == null ? null : big >= 1000
    ? Number(v.toFixed(decimals)).toLocaleString('en-US', { maximumFractionDigits: decimals }) : v.toFixed(decimals)));
}

/** Decimals that write x (an axis increment such as 0.25 or 2.5e-6) exactly. */
function decimalsOf(x) {
  if (!(x > 0) || x >= 1) return 0;
  for (let d = 0; d < 12; d++) {
    const m = x * 10 ** d;
    if (Math.abs(m - Math.round(m)) < 1e-6 * m) return d;
  }
  return 12;
}

/** One tick label (see fmtTicks). */
export const fmtTick = (v, incr) => fmtTicks([v], incr)[0];

/**
 * Tick positions of a log axis over [min, max]: powers of ten, every k-th of them when the
 * decades are more than `room`, or 1-2-5 steps inside a range narrower than two decades. With
 * `sym` (a symmetric log axis: zeros and negatives in view) also 0 and the mirrored negative
 * decades down to `min`, the smallest magnitude being `floorMag`.
 */
export function logSplits(min, max, room, sym = false, floorMag = 1e-300) {
  const side = (lo, hi) => {  // ticks in [lo, hi], 0 < lo < hi
    const e0 = Math.floor(Math.log10(lo)), e1 = Math.ceil(Math.log10(hi));
    const out = [];
    if (e1 - e0 <= 2) {
      for (let e = e0; e <= e1; e++) for (const m of [1, 2, 5]) { const v = m * 10 ** e; if (v >= lo * (1 - 1e-9) && v <= hi * (1 + 1e-9)) out.push(+v.toPrecision(12)); }
      if (out.length >= 2) return out;
    }
    const k = Math.max(1, Math.ceil((e1 - e0 + 1) / Math.max(1, room)));
    for (let e = Math.ceil(e0 / k) * k; e <= e1; e += k) { const v = 10 ** e; if (v >= lo * (1 - 1e-9) && v <= hi * (1 + 1e-9)) out.push(v); }
    return out;
  };
  if (!sym) return min > 0 && max > min ? side(min, max) : [];
  const out = [];
  const lo = Math.max(floorMag, 1e-300);
  if (min < 0) out.push(...side(lo, -min).map((v) => -v).reverse());
  if (min <= 0 && max >= 0) out.push(0);
  if (max > lo) out.push(...side(Math.max(lo, min > 0 ? min : lo), max));
  return out;
}

/**
 * Labels of a log axis: 1-2-5 style significant digits; when the decades are too many for
 * `room` labels, only every k-th decade keeps its label (the others stay unlabelled).
 */
export function fmtLogTicks(splits, room) {
  const decades = splits.filter((v) => v != null && v > 0 && Math.abs(Math.log10(v) - Math.round(Math.log10(v))) < 1e-9);
  const labelled = splits.filter((v) => v != null).length;
  let k = 1;
  if (labelled > room) k = Math.max(1, Math.ceil(decades.length / Math.max(1, room)));
  return splits.map((v) => {
    if (v == null) return null;
    if (v === 0) return '0';
    const l = Math.log10(Math.abs(v));
    const isDecade = Math.abs(l - Math.round(l)) < 1e-9;
    if (labelled > room && (!isDecade || Math.round(l) % k !== 0)) return null;
    const a = Math.abs(v);
    if (a < 1e4 && a >= 1e-3) return String(+v.toPrecision(3));
    const e = Math.floor(Math.log10(a) + 1e-9);
    return String(+(v / 10 ** e).toFixed(2)) + 'e' + e;
  });
}

/** A step count: 122,368 or, for round thousands on a coarse axis, 120k. */
export function fmtStep(v, incr = 1) {
  if (v == null) return null;
  if (incr >= 1000 && v % 1000 === 0 && v !== 0) return (v / 1e6 >= 1 && v % 1e6 === 0 ? v / 1e6 + 'M' : v / 1000 + 'k');
  return Math.round(v).toLocaleString('en-US');
}

/** Seconds as 1.2s, 3m 04s, 2h 05m. */
export function fmtDuration(s) {
  if (!(s >= 0)) return '-';
  if (s < 60) return (s < 10 ? s.toFixed(1) : Math.round(s)) + 's';
  if (s < 3600) return Math.floor(s / 60) + 'm ' + String(Math.floor(s % 60)).padStart(2, '0') + 's';
  return Math.floor(s / 3600) + 'h ' + String(Math.floor((s / 60) % 60)).padStart(2, '0') + 'm';
}

/** Relative time on an axis: +0:45, +12:30, +1:02:03; `digits` for fractions of a second. */
export function fmtRelative(s, digits = 1) {
  if (!Number.isFinite(s)) return '';
  const sign = s < 0 ? '-' : '+';
  s = Math.abs(s);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  const ss = (sec < 10 ? '0' : '') + (Number.isInteger(sec) ? sec : sec.toFixed(digits));
  return sign + (h ? h + ':' + String(m).padStart(2, '0') : m) + ':' + ss;
}

/**
 * Wall-clock time (Unix seconds) on an axis; the date too when the span covers days, tenths or
 * hundredths of a second when it is shorter than 10 s or 1 s (a short run's ticks are that
 * close).
 */
export function fmtWall(t, span) {
  if (!Number.isFinite(t)) return '';
  const d = new Date(t * 1000);
  const hm = String(d.getHours()).padStart(2, '0') + ':' + String(d.getMinutes()).padStart(2, '0');
  const digits = span < 1 ? 2 : span < 10 ? 1 : 0;
  const sec = digits ? (d.getSeconds() + d.getMilliseconds() / 1000).toFixed(digits) : String(d.getSeconds());
  const withSec = span < 600 ? hm + ':' + sec.padStart(digits ? 3 + digits : 2, '0') : hm;
  return span >= 86400 ? (d.getMonth() + 1) + '/' + d.getDate() + ' ' + hm : withSec;
}

// ---------------------------------------------------------------- colours

/** Line colours: readable on the light and the dark background. */
export const PALETTE = ['#3d73c7', '#e8702a', '#2e9e5b', '#c2417a', '#8a5cd6', '#c99a06', '#14a3b8',
  '#d64545', '#6b8e23', '#a0522d', '#8c8c8c', '#1b4f8f'];
export const SEVERITY_COLOR = { info: '#3b82f6', warning: '#e09b12', error: '#d63b3b' };
export const SEVERITY_RANK = { info: 0, warning: 1, error: 2 };

/** FNV-1a, 32 bits: a stable hash of a name. */
export function hash32(s) {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

/**
 * Colours for the lines of one chart, by name: a name always hashes to the same palette slot,
 * so a series keeps its colour across runs, reloads and reconnects; a totals series (no "/")
 * takes slot 0; a collision inside the chart moves the later name (in name order) to the next
 * free slot, so the lines of one chart never share a colour.
 */
export function assignColors(names) {
  const out = new Map();
  const taken = new Set();
  const order = names.slice().sort((a, b) => (a.includes('/') - b.includes('/')) || (a < b ? -1 : a > b ? 1 : 0));
  for (const n of order) {
    let slot = n.includes('/') ? 1 + (hash32(n) % (PALETTE.length - 1)) : 0;
    for (let i = 0; i < PALETTE.length && taken.has(slot); i++) slot = (slot + 1) % PALETTE.length;
    taken.add(slot);
    out.set(n, PALETTE[slot]);
  }
  return out;
}

/** A colour for run id `id` in multi-run charts (stable per id). */
export const runColor = (id) => PALETTE[(Math.imul(id, 2654435761) >>> 0) % PALETTE.length];

/** '#rrggbb' with alpha a (0..1) as '#rrggbbaa'. */
export const withAlpha = (hex, a) => hex + Math.round(a * 255).toString(16).padStart(2, '0');

// ---------------------------------------------------------------- smoothing and ranges

/**
 * TensorBoard's smoothing: an exponential moving average with weight w (0 = none, 0.99 =
 * heavy), debiased so that the first points are not pulled toward 0. Non-finite values are
 * passed through and do not enter the average. Returns an array as long as values.
 */
export function ema(values, w) {
  const out = new Array(values.length);
  if (!(w > 0)) {
    for (let i = 0; i < values.length; i++) out[i] = values[i];
    return out;
  }
  let last = 0, n = 0;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (!Number.isFinite(v)) { out[i] = v; continue; }
    last = last * w + (1 - w) * v;
    n++;
    out[i] = last / (1 - w ** n);
  }
  return out;
}

/** The q-quantile (0..1) of an ascending array, linearly interpolated. */
export function quantile(sorted, q) {
  if (!sorted.length) return NaN;
  const pos = (sorted.length - 1) * q;
  const i = Math.floor(pos), f = pos - i;
  return i + 1 < sorted.length ? sorted[i] + f * (sorted[i + 1] - sorted[i]) : sorted[i];
}

/**
 * The y-range of a chart. `values`: the finite values in view (any order). `log`: the range of
 * a log axis (values <= 0 excluded, multiplicative padding). `all`: every value. Otherwise
 * outliers are left out: within the top (bottom) 5% of the sorted values, everything beyond
 * the first jump (wider than twice the body, the 5%..95% quantile span, and more than 3x in
 * magnitude) is outside, so a burst of exploding steps (a 3e23 loss among values near 2) does
 * not flatten the rest, while a curve that falls or grows fast (an LR decay, a divergence)
 * keeps its extremes. Returns [min, max, clipped], clipped
 * telling whether some values lie outside.
 */
export function yRange(values, { log = false, all = false } = {}) {
  let v = values;
  if (log) v = v.filter((x) => x > 0).map(Math.log10);
  if (!v.length) return log ? [0.1, 10, false] : [0, 1, false];
  const s = Float64Array.from(v).sort();
  const n = s.length;
  const min = s[0], max = s[n - 1];
  let lo = min, hi = max;
  if (!all && n >= 20) {
    const q05 = quantile(s, 0.05), q95 = quantile(s, 0.95);
    const gap = 2 * Math.max(q95 - q05, Math.abs(q95) * 1e-6, 1e-300);
    // A jump: wider than two bodies and more than 3x in magnitude (a curve that decays or grows
    // exponentially has no such jump between neighbouring values, an explosion does).
    const jump = (near, far) => Math.abs(far - near) > gap && Math.abs(far) > 3 * Math.abs(near);
    for (let j = Math.floor(0.95 * (n - 1)); j + 1 < n; j++) if (jump(s[j], s[j + 1])) { hi = s[j]; break; }
    for (let j = Math.ceil(0.05 * (n - 1)); j - 1 >= 0; j--) if (jump(s[j], s[j - 1])) { lo = s[j]; break; }
  }
  let span = hi - lo;
  if (span <= 0) span = log ? 1 : Math.max(Math.abs(hi) * 0.1, 1e-9);
  const pad = span * 0.06;
  const clipped = lo > min || hi < max;
  lo -= pad; hi += pad;
  if (!log && min >= 0 && lo < 0 && lo > -span * 0.5) lo = Math.max(lo, 0);  // losses >= 0 stay on a 0 floor
  return log ? [10 ** lo, 10 ** hi, clipped] : [lo, hi, clipped];
}

// ---------------------------------------------------------------- M4 buckets

/**
 * M4 representatives of points (ascending steps; [step, value, wall]) in buckets of width
 * steps aligned to multiples of width: per bucket the first, smallest and largest finite, the
 * first non-finite and the last point, in step order, each once. The same rule as the
 * server's run_reader::window, so live points appended to a downsampled view look the same
 * as a fresh fetch.
 */
export function m4(points, width, out = []) {
  let i = 0;
  while (i < points.length) {
    const b = Math.floor(points[i][0] / width);
    let j = i, mn = -1, mx = -1, nf = -1;
    for (; j < points.length && Math.floor(points[j][0] / width) === b; j++) {
      const v = points[j][1];
      if (Number.isFinite(v)) {
        if (mn < 0 || v < points[mn][1]) mn = j;
        if (mx < 0 || v > points[mx][1]) mx = j;
      } else if (nf < 0) nf = j;
    }
    const pick = [i, mn, mx, nf, j - 1].filter((k) => k >= 0).sort((a, b2) => a - b2);
    for (let k = 0; k < pick.length; k++) if (k === 0 || pick[k] !== pick[k - 1]) out.push(points[pick[k]]);
    i = j;
  }
  return out;
}

/**
 * A downsampled series that grows live: `pts` are M4 representatives in buckets of `bw` steps
 * (1: every point) except the raw points of the last, still open bucket. Appending is O(new
 * points); when the series outgrows `budget` points the buckets double in width (M4 of M4
 * representatives is the M4 of the points), so memory and drawing stay bounded.
 */
export class Track {
  constructor(points = [], bw = 1, budget = 4000) {
    this.pts = points;
    this.bw = Math.max(1, bw);
    this.budget = budget;
    this.open = this.pts.length;  // index of the first raw point of the open bucket
    this.reopen();
  }
  reopen() {
    if (this.bw === 1) { this.open = this.pts.length; return; }
    const last = this.pts.length ? Math.floor(this.pts[this.pts.length - 1][0] / this.bw) : 0;
    let k = this.pts.length;
    while (k > 0 && Math.floor(this.pts[k - 1][0] / this.bw) === last) k--;
    this.open = k;
  }
  get lastStep() { return this.pts.length ? this.pts[this.pts.length - 1][0] : -1; }
  get firstStep() { return this.pts.length ? this.pts[0][0] : -1; }
  /** Appends points with steps after the last one held (older ones are ignored). */
  append(points) {
    let last = this.lastStep, added = 0;
    for (const p of points) {
      if (p[0] <= last) continue;
      if (this.bw > 1 && this.pts.length > this.open &&
          Math.floor(p[0] / this.bw) !== Math.floor(this.pts[this.open][0] / this.bw)) this.closeBucket();
      this.pts.push(p);
      last = p[0];
      added++;
    }
    if (this.pts.length > this.budget * 1.25) this.widen();
    return added;
  }
  closeBucket() {
    const raw = this.pts.splice(this.open);
    m4(raw, this.bw, this.pts);
    this.open = this.pts.length;
  }
  widen() {
    while (this.pts.length > this.budget) {
      this.bw *= 2;
      this.pts = m4(this.pts, this.bw);
    }
    this.reopen();
  }
}

/**
 * The point shown for `step` in points bucketed by `bw`: the last point at or before step
 * inside the bucket holding step (the first of the bucket when all lie after it); -1 when
 * that bucket is empty. Charts that draw buckets of different width thus read the same step.
 */
export function bucketIndex(points, bw, step) {
  let lo = 0, hi = points.length - 1, at = -1;
  while (lo <= hi) {  // last index with points[i][0] <= step
    const mid = (lo + hi) >> 1;
    if (points[mid][0] <= step) { at = mid; lo = mid + 1; } else hi = mid - 1;
  }
  const b = Math.floor(step / bw);
  if (at >= 0 && Math.floor(points[at][0] / bw) === b) return at;
  if (at + 1 < points.length && Math.floor(points[at + 1][0] / bw) === b) return at + 1;
  return -1;
}

/** The ascending union of several ascending step arrays (each may be empty). */
export function mergeSteps(arrays) {
  let acc = [];
  for (const a of arrays) {
    if (!a.length) continue;
    if (!acc.length) { acc = a.slice(); continue; }
    const out = new Array(acc.length + a.length);
    let i = 0, j = 0, n = 0;
    while (i < acc.length || j < a.length) {
      const x = j >= a.length || (i < acc.length && acc[i] <= a[j]) ? acc[i++] : a[j++];
      if (n === 0 || out[n - 1] !== x) out[n++] = x;
    }
    out.length = n;
    acc = out;
  }
  return acc;
}

// ---------------------------------------------------------------- time axis

/**
 * Step <-> time by linear interpolation over [step, time] pairs (ascending steps, time
 * non-decreasing); clamps to the ends.
 */
export class TimeMap {
  constructor(pairs) { this.p = pairs.filter((q) => Number.isFinite(q[1])); }
  get ok() { return this.p.length >= 2 && this.p[this.p.length - 1][1] > this.p[0][1]; }
  get t0() { return this.p.length ? this.p[0][1] : 0; }
  timeAt(step) { return interp(this.p, 0, 1, step); }
  stepAt(t) { return interp(this.p, 1, 0, t); }
}
function interp(p, a, b, x) {
  if (!p.length) return NaN;
  if (x <= p[0][a]) return p[0][b];
  if (x >= p[p.length - 1][a]) return p[p.length - 1][b];
  let lo = 0, hi = p.length - 1;
  while (hi - lo > 1) { const m = (lo + hi) >> 1; if (p[m][a] <= x) lo = m; else hi = m; }
  const d = p[hi][a] - p[lo][a];
  return d > 0 ? p[lo][b] + (x - p[lo][a]) / d * (p[hi][b] - p[lo][b]) : p[lo][b];
}

// From hundredths of a second: a run that lasted under a second still gets round ticks.
const TIME_STEPS = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900,
  1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800];
/** Round times (multiples of a 1-2-5 / clock interval) in [t0, t1], about `count` of them. */
export function timeTicks(t0, t1, count, origin = 0) {
  if (!(t1 > t0) || count < 1) return [];
  const want = (t1 - t0) / count;
  const inc = TIME_STEPS.find((s) => s >= want) || Math.ceil(want / 604800) * 604800;
  const out = [];
  // k * inc, not a running sum: 0.1 added ten times is not 1.
  for (let k = Math.ceil((t0 - origin) / inc - 1e-9); k * inc + origin <= t1 + 1e-9; k++) out.push(k * inc + origin);
  return out;
}

// ---------------------------------------------------------------- chart grouping

/** Chart of each series kind (the API's `kind`), in page order. */
export const KIND_CHARTS = [
  { key: 'loss', kinds: ['loss', 'task_loss'], title: 'Loss (total and per task)' },
  { key: 'grad', kinds: ['grad_norm', 'param_grad_norm'], title: 'Gradient norm' },
  { key: 'task_grad', kinds: ['task_grad_norm'], title: 'Per-task gradient norm' },
  { key: 'lr', kinds: ['lr'], title: 'Learning rate' },
  { key: 'acc', kinds: ['accuracy'], title: 'Accuracy' },
];

/**
 * Series of kind "other" go on charts by name shape: path segments that are numbers become
 * "*", so rank/0/loss and rank/1/loss share the chart "rank/*\/loss".
 */
export const otherShape = (name) => name.split('/').map((p) => (/^\d+$/.test(p) ? '*' : p)).join('/');

// ---------------------------------------------------------------- the view in the URL

/** Everything the URL keeps, with defaults. */
export function defaultView() {
  return {
    page: 'runs', run: null,
    cmp: [], cs: ['loss'],
    from: null, to: null,
    sm: 0, x: 'step', log: [], all: [], tasks: 'auto', k: 5,
    sev: ['info', 'warning', 'error'], hide: [], fq: '', f: null, lanes: 'kind',
    q: '', sort: '-id', cols: [],
  };
}

const LIST_KEYS = ['cmp', 'cs', 'log', 'all', 'sev', 'hide', 'cols'];
/** "#/run/3?from=10&to=90&sm=0.6&cmp=1,2" -> a view (unknown keys ignored, bad values defaulted). */
export function parseHash(hash) {
  const v = defaultView();
  const m = /^#?\/?(run\/(\d+)|run\/([^?]*)|)(\?(.*))?$/.exec(hash || '');
  if (!m) return v;
  if (m[2]) { v.page = 'run'; v.run = Number(m[2]); } else if (m[3] !== undefined) { v.page = 'run'; v.run = NaN; }
  const dec = (x) => { try { return decodeURIComponent(x.replace(/\+/g, ' ')); } catch (e) { return x; } };
  // Split by hand: list items are encoded one by one, so a "," inside a name stays in it.
  for (const item of (m[5] || '').split('&')) {
    if (!item) continue;
    const eq = item.indexOf('=');
    const k = dec(eq < 0 ? item : item.slice(0, eq)), raw = eq < 0 ? '' : item.slice(eq + 1);
    const val = dec(raw);
    if (LIST_KEYS.includes(k)) {
      const items = raw === '' ? [] : raw.split(',').map(dec);
      v[k] = k === 'cmp' ? items.map(Number).filter((n) => Number.isInteger(n) && n > 0) : items;
    } else if (k === 'from' || k === 'to' || k === 'f') {
      const n = Number(val);
      if (Number.isFinite(n) && n >= 0) v[k] = n;
    } else if (k === 'sm') v.sm = Math.min(0.99, Math.max(0, Number(val) || 0));
    else if (k === 'k') v.k = Math.max(0, Math.min(50, Math.round(Number(val)) || 0));
    else if (k === 'x' && ['step', 'wall', 'rel'].includes(val)) v.x = val;
    else if (k === 'tasks' && ['auto', 'shared', 'axes', 'norm'].includes(val)) v.tasks = val;
    else if (k === 'lanes' && ['kind', 'severity'].includes(val)) v.lanes = val;
    else if (k === 'q' || k === 'fq' || k === 'sort') v[k] = val;
  }
  if (v.from != null && v.to != null && v.from > v.to) v.from = v.to = null;
  return v;
}

/** The inverse of parseHash: only what differs from the defaults. */
export function viewHash(v) {
  const d = defaultView();
  const q = [];
  const keys = v.page === 'run'
    ? ['cmp', 'cs', 'from', 'to', 'sm', 'x', 'log', 'all', 'tasks', 'k', 'sev', 'hide', 'fq', 'lanes', 'f']
    : ['q', 'sort', 'cols'];
  for (const k of keys) {
    const val = v[k];
    if (val == null || JSON.stringify(val) === JSON.stringify(d[k])) continue;
    const s = Array.isArray(val) ? val.map((x) => encodeURIComponent(String(x))).join(',') : encodeURIComponent(String(val));
    q.push(k + '=' + s);
  }
  const path = v.page === 'run' ? '#/run/' + v.run : '#/';
  return path + (q.length ? '?' + q.join('&') : '');
}

// ---------------------------------------------------------------- download

/** One CSV field (RFC 4180 quoting). */
export const csvField = (x) => {
  const s = x == null ? '' : typeof x === 'number' ? fmtCsvNumber(x) : String(x);
  return /[",\n\r]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
};
const fmtCsvNumber = (x) => (Number.isNaN(x) ? 'nan' : x === Infinity ? 'inf' : x === -Infinity ? '-inf' : String(x));
/** CSV text of rows (arrays) under a header. */
export const toCsv = (header, rows) => [header, ...rows].map((r) => r.map(csvField).join(',')).join('\n') + '\n';
