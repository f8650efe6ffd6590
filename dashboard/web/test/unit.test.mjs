// Unit tests of the page's pure helpers (dashboard/web/js/util.js), run by node's test runner:
//   node --test dashboard/web/test/unit.test.mjs
// References are written independently of the code under test: closed forms, brute force over
// the raw points, hand-computed constants.
import test from 'node:test';
import assert from 'node:assert/strict';
import * as u from '../js/util.js';

// A seeded generator, so failures reproduce.
function rng(seed) {
  let s = seed >>> 0;
  return () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32);
}

test('ema equals the closed form sum of weights (1-w) w^(n-i) v_i / (1 - w^n)', () => {
  const r = rng(1);
  const v = Array.from({ length: 300 }, () => r() * 10 - 2);
  v[17] = NaN; v[40] = Infinity;  // passed through, not averaged
  for (const w of [0.3, 0.6, 0.9, 0.99]) {
    const got = u.ema(v, w);
    const finite = [];
    for (let i = 0; i < v.length; i++) {
      if (!Number.isFinite(v[i])) { assert.ok(Object.is(got[i], v[i])); continue; }
      finite.push(v[i]);
      const n = finite.length;
      let num = 0;
      for (let k = 0; k < n; k++) num += (1 - w) * w ** (n - 1 - k) * finite[k];
      const want = num / (1 - w ** n);
      assert.ok(Math.abs(got[i] - want) <= 1e-9 * Math.max(1, Math.abs(want)), `w=${w} i=${i}: ${got[i]} vs ${want}`);
    }
  }
  assert.deepEqual(u.ema([1, 2, 3], 0), [1, 2, 3]);
  // Debiasing: a constant series stays exactly constant from the first point.
  assert.ok(u.ema([5, 5, 5, 5], 0.9).every((x) => Math.abs(x - 5) < 1e-12));
});

test('quantile interpolates linearly (numpy "linear")', () => {
  const s = [1, 2, 3, 4, 10];
  assert.equal(u.quantile(s, 0), 1);
  assert.equal(u.quantile(s, 1), 10);
  assert.equal(u.quantile(s, 0.5), 3);
  assert.equal(u.quantile(s, 0.875), 4 + 0.5 * 6);  // position 3.5
  assert.ok(Number.isNaN(u.quantile([], 0.5)));
});

test('yRange leaves one huge outlier out and keeps ordinary extremes', () => {
  const r = rng(2);
  const v = Array.from({ length: 3000 }, (_, i) => 2.3 * Math.exp(-i / 800) + 0.05 * r());
  const plain = u.yRange(v);
  assert.equal(plain[2], false, 'no outlier: nothing clipped');
  assert.ok(plain[0] <= Math.min(...v) && plain[1] >= Math.max(...v));
  v[1500] = 3e23;
  const robust = u.yRange(v);
  assert.ok(robust[1] < 10, 'the 3e23 step does not set the range: ' + robust[1]);
  assert.equal(robust[2], true);
  const all = u.yRange(v, { all: true });
  assert.ok(all[1] >= 3e23);
  // A burst of exploding steps (2% of the run, like fmnist_train --lr 5) is left out too.
  const burst = Array.from({ length: 400 }, (_, i) => 2.3 + 0.05 * r() + (i >= 5 && i < 13 ? 10 ** (3 + i) : 0));
  const b = u.yRange(burst);
  assert.ok(b[1] < 3 && b[0] > 2 && b[2], 'burst range ' + b);
  // An exponential LR decay or a divergence is a curve, not an outlier: nothing is left out.
  const decay = Array.from({ length: 200000 }, (_, i) => 0.1 * 0.999 ** i);
  assert.equal(u.yRange(decay)[2], false);
  const diverge = Array.from({ length: 1000 }, (_, i) => 2 + (i > 900 ? 1.1 ** (i - 900) : 0));
  assert.equal(u.yRange(diverge)[2], false);
  // Log: multiplicative, positive only.
  const lr = u.yRange([1e-6, 1e-3, 1, 1e3], { log: true, all: true });
  assert.ok(lr[0] > 0 && lr[0] < 1e-6 && lr[1] > 1e3);
  assert.deepEqual(u.yRange([]), [0, 1, false]);
});

/** M4 by brute force: per bucket, first/min/max/first-non-finite/last indices. */
function bruteM4(points, width) {
  const buckets = new Map();
  points.forEach((p, i) => {
    const b = Math.floor(p[0] / width);
    if (!buckets.has(b)) buckets.set(b, []);
    buckets.get(b).push(i);
  });
  const keep = new Set();
  for (const idx of buckets.values()) {
    keep.add(idx[0]); keep.add(idx[idx.length - 1]);
    const fin = idx.filter((i) => Number.isFinite(points[i][1]));
    if (fin.length) {
      const mn = Math.min(...fin.map((i) => points[i][1])), mx = Math.max(...fin.map((i) => points[i][1]));
      keep.add(fin.find((i) => points[i][1] === mn)); keep.add(fin.find((i) => points[i][1] === mx));
    }
    const nf = idx.find((i) => !Number.isFinite(points[i][1]));
    if (nf !== undefined) keep.add(nf);
  }
  return Array.from(keep).sort((a, b) => a - b).map((i) => points[i]);
}

test('m4 keeps per bucket exactly first, min, max, first non-finite and last', () => {
  const r = rng(3);
  const pts = [];
  for (let s = 0; s < 5000; s += 1 + Math.floor(r() * 3)) pts.push([s, r() < 0.01 ? NaN : r() * 100, s * 0.1]);
  for (const w of [1, 7, 64, 1000]) assert.deepEqual(u.m4(pts, w), bruteM4(pts, w), 'width ' + w);
});

test('a live Track stays the M4 of every point appended, within its budget', () => {
  const r = rng(4);
  const all = [];
  for (let s = 0; s < 60000; s++) all.push([s, Math.sin(s / 500) + r() * 0.1 + (s === 33333 ? 50 : 0), s]);
  const t = new u.Track(all.slice(0, 1000), 1, 2000);
  for (let s = 1000; s < all.length; s += 137) t.append(all.slice(s, s + 137));
  assert.ok(t.pts.length <= 2000 * 1.25 + t.bw, 'bounded: ' + t.pts.length);
  // Every closed bucket equals the brute-force M4 of the raw points at the track's width.
  const closed = t.pts.slice(0, t.open);
  const lastClosedStep = closed[closed.length - 1][0];
  const want = bruteM4(all.filter((p) => p[0] <= lastClosedStep), t.bw);
  assert.deepEqual(closed, want);
  // The spike survives every compaction.
  assert.ok(t.pts.some((p) => p[0] === 33333));
  // Old points are ignored.
  assert.equal(t.append([[5, 1, 0]]), 0);
});

test('bucketIndex snaps a step to the point of the bucket that holds it', () => {
  const pts = [[0, 1], [3, 2], [7, 3], [8, 4], [15, 5], [40, 6]];
  // width 8: buckets [0..7] {0,3,7}, [8..15] {8,15}, [40..47] {40}
  assert.equal(u.bucketIndex(pts, 8, 5), 1);    // last at or before 5 in bucket 0
  assert.equal(u.bucketIndex(pts, 8, 9), 3);    // step 8
  assert.equal(u.bucketIndex(pts, 8, 15), 4);
  assert.equal(u.bucketIndex(pts, 8, 20), -1);  // empty bucket
  assert.equal(u.bucketIndex(pts, 8, 41), 5);
  assert.equal(u.bucketIndex([[10, 1], [12, 2]], 8, 9), 0);  // first of the bucket when all lie after
  // Two charts with different widths read the same bucket for the same step.
  assert.equal(u.bucketIndex(pts, 1, 7), 2);
});

test('mergeSteps is the sorted union', () => {
  assert.deepEqual(u.mergeSteps([[1, 3, 5], [], [2, 3, 9], [0]]), [0, 1, 2, 3, 5, 9]);
  assert.deepEqual(u.mergeSteps([]), []);
});

test('TimeMap interpolates both ways and timeTicks lands on round times', () => {
  const m = new u.TimeMap([[0, 1000], [100, 1010], [200, 1030]]);
  assert.equal(m.timeAt(50), 1005);
  assert.equal(m.timeAt(150), 1020);
  assert.equal(m.stepAt(1020), 150);
  assert.equal(m.timeAt(-5), 1000);
  const ticks = u.timeTicks(1000, 1030, 6, 1000);
  assert.deepEqual(ticks, [1000, 1005, 1010, 1015, 1020, 1025, 1030]);
  const hours = u.timeTicks(0, 3 * 3600 + 5, 4, 0);  // at most 4: every hour
  assert.deepEqual(hours, [0, 3600, 7200, 10800]);
  // A run shorter than a second that holds no whole second still gets ticks, labelled apart.
  const short = u.timeTicks(1000.03, 1000.83, 5, 0);  // about 0.16 s apart: every 0.2 s
  assert.equal(short.length, 4);
  short.forEach((t, i) => assert.ok(Math.abs(t - (1000.2 + 0.2 * i)) < 1e-9, String(t)));
  const labels = short.map((t) => u.fmtWall(t, 0.8));
  assert.equal(new Set(labels).size, 4, labels.join(' '));
  assert.ok(labels.every((l) => /^\d\d:\d\d:\d\d\.\d\d$/.test(l)), labels.join(' '));
  assert.ok(labels[0].endsWith(':40.20'), labels[0]);  // 1000.2 s is 00:16:40.2 past a whole hour
  assert.ok(/:\d\d:45$/.test(u.fmtWall(1005, 300)) && /:\d\d:45\.5$/.test(u.fmtWall(1005.5, 5)));
});

test('tick labels are never the text "null" and neighbours stay distinct', () => {
  assert.equal(u.fmtTick(null, 1), null);
  assert.equal(u.fmtTick(0.25, 0.05), '0.25');
  assert.equal(u.fmtTick(0.2, 0.05), '0.20');
  assert.equal(u.fmtTick(1.5, 0.5), '1.5');
  assert.equal(u.fmtTick(15000, 5000), '15,000');
  assert.equal(u.fmtTick(3e23, 1e23), '3e23');
  assert.equal(u.fmtTick(1e-5, 0), '1e-5');
  // One format per axis: no "9.97e-4" next to "0.001000".
  assert.deepEqual(u.fmtTicks([0.000995, 0.0009975, 0.001, 0.0010025], 0.0000025), ['0.0009950', '0.0009975', '0.0010000', '0.0010025']);
  assert.deepEqual(u.fmtTicks([1e5, 2e5, 3e5], 1e5), ['1e5', '2e5', '3e5']);
  assert.deepEqual(u.fmtTicks([null, 10, null], 10), [null, '10', null]);
  // Log axes: fifteen decades in room for five labels keep every third decade.
  const decades = Array.from({ length: 15 }, (_, i) => 10 ** (i - 2));
  const lab = u.fmtLogTicks(decades, 5);
  assert.ok(lab.filter((x) => x != null).length <= 5 && !lab.includes('null'), lab.join(' '));
  assert.equal(lab[2], '1');
  assert.deepEqual(u.fmtLogTicks([0, 0.1, 1, 10], 8), ['0', '0.1', '1', '10']);
  // Log tick positions: 1-2-5 in a narrow range, thinned decades in a wide one, 0 on a symmetric axis.
  assert.deepEqual(u.logSplits(1.8, 78, 6), [2, 5, 10, 20, 50]);
  const wide = u.logSplits(1e-3, 1e23, 6);
  assert.ok(wide.length <= 6 && wide.every((v, i) => i === 0 || v / wide[i - 1] === wide[1] / wide[0]), wide.join(' '));
  assert.deepEqual(u.logSplits(0, 1e4, 8, true, 1), [0, 1, 10, 100, 1000, 10000]);
  assert.equal(u.fmtStep(122368), '122,368');
  assert.equal(u.fmtStep(120000, 20000), '120k');
  assert.equal(u.fmtRelative(3723), '+1:02:03');
  assert.equal(u.fmtRelative(45), '+0:45');
  assert.equal(u.fmtRelative(0.25, 2), '+0:00.25');
});

test('colours: a name keeps its colour, lines of one chart never share one', () => {
  const a = u.assignColors(['grad_norm', 'grad_norm/fc1.weight', 'grad_norm/fc2.weight', 'grad_norm/fc3.weight']);
  const b = u.assignColors(['grad_norm/fc3.weight', 'grad_norm', 'grad_norm/fc1.weight', 'grad_norm/fc2.weight']);
  for (const [k, v] of a) assert.equal(b.get(k), v, k);
  assert.equal(a.get('grad_norm'), u.PALETTE[0]);
  const many = Array.from({ length: u.PALETTE.length }, (_, i) => 'layer/' + i);
  assert.equal(new Set(u.assignColors(many).values()).size, u.PALETTE.length);
  assert.equal(u.hash32('loss/cls'), u.hash32('loss/cls'));
  assert.equal(u.hash32(''), 0x811c9dc5);  // FNV-1a offset basis
  assert.equal(u.hash32('a'), 0xe40c292c);  // FNV-1a 32 of "a" (published test vector)
});

test('the view survives the URL: parseHash(viewHash(v)) == v', () => {
  const v = { ...u.defaultView(), page: 'run', run: 7, cmp: [3, 12], cs: ['loss/cls', 'a,b', 'x y%'], from: 100, to: 900,
    sm: 0.6, x: 'wall', log: ['grad'], all: ['loss'], tasks: 'axes', k: 10, sev: ['error'], hide: ['plateau'], fq: 'spike', f: 42, lanes: 'severity' };
  assert.deepEqual(u.parseHash(u.viewHash(v)), v);
  const r = { ...u.defaultView(), q: 'lr 5', sort: 'steps', cols: ['lr', 'optimizer.name'] };
  assert.deepEqual(u.parseHash(u.viewHash(r)), r);
  assert.equal(u.viewHash(u.defaultView()), '#/');
  assert.ok(Number.isNaN(u.parseHash('#/run/abc').run));
  assert.equal(u.parseHash('#/run/5?from=9&to=3').from, null);  // an empty range is dropped
});

test('otherShape groups per-rank series', () => {
  assert.equal(u.otherShape('rank/3/loss'), 'rank/*/loss');
  assert.equal(u.otherShape('my_metric'), 'my_metric');
});

test('CSV quotes what needs quoting and spells non-finite values', () => {
  assert.equal(u.toCsv(['a', 'b'], [['x,y', NaN], ['q"', -Infinity]]), 'a,b\n"x,y",nan\n"q""",-inf\n');
});
