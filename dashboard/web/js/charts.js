// One chart: a uPlot instance over some (run, series) lines, with its own legend, log and
// y-range toggles, smoothing (raw drawn faint), NaN/Inf markers, clipped-outlier markers,
// finding markers on the series they name, and hover values snapped to the bucket that holds
// the step. Data comes from data.js tracks; app.js decides which charts exist.
/* global uPlot */
import { el, themeColors } from './state.js';
import { ema, yRange, mergeSteps, bucketIndex, fmt, fmtTicks, fmtLogTicks, logSplits, fmtStep, fmtWall, fmtRelative,
  timeTicks, withAlpha, SEVERITY_COLOR } from './util.js';
import { trackFor } from './data.js';

export const CHART_HEIGHT = 210;
const AXIS_SIZE = 132;
const RUG_ROW = 8;      // px per row of finding ticks under the curves  // left axis width: the same on every chart and the lanes, so x lines up

// Index of the first point with step >= s (lo) / the last with step <= s (hi).
function lowerBound(pts, s) {
  let lo = 0, hi = pts.length;
  while (lo < hi) { const m = (lo + hi) >> 1; if (pts[m][0] < s) lo = m + 1; else hi = m; }
  return lo;
}

/**
 * uPlot's linear paths, drawn as 1-device-pixel hairlines when the series is dense (more
 * points than pixels). Skia strokes a hairline through a per-pixel zigzag about 25x faster
 * than a 1.75 px antialiased line (measured in headless Chromium: 1.7 vs 44 ms for 1225
 * columns), which decided the frame rate of a live 200k-step run. A thick line (the totals,
 * the series a selected finding names) becomes two hairlines one pixel apart.
 */
function densePaths() {
  const linear = uPlot.paths.linear();
  return (u, si, i0, i1) => {
    const r = linear(u, si, i0, i1);
    const px = devicePixelRatio || 1;
    if (i1 - i0 + 1 < 1.5 * u.bbox.width / px || !r.stroke) return r;
    r._width = 1 / px;
    if (u.series[si].width * px >= 1.5) {
      const two = new Path2D();
      two.addPath(r.stroke);
      two.addPath(r.stroke, new DOMMatrix([1, 0, 0, 1, 0, 1]));
      r.stroke = two;
    }
    return r;
  };
}

export class Chart {
  /**
   * spec: {key, title, lines: [{run, name, label, color, width, scale}], compare, normalise,
   * note}; ctx: the app's callbacks (see app.js makeChartContext).
   */
  constructor(spec, ctx) {
    this.spec = spec;
    this.key = spec.key;
    this.ctx = ctx;
    this.lines = spec.lines;
    this.hidden = new Set();      // line indices switched off in the legend
    this.markers = [];            // drawn finding markers: {id, x, y} in CSS px of the plot
    this.nonfinite = [];          // [{line, step, v}]
    this.clipped = [];            // [{line, step, v}] outside the robust range
    this.tracks = [];
    this.smoothed = [];
    this.xr = [0, 1];
    this.yr = {};
    this.distr = null;
    this.box = el('div', { class: 'chart', id: 'chart-' + spec.key.replace(/[^\w-]/g, '_'), 'data-key': spec.key, 'data-task-mode': spec.taskMode || null,
      'data-points': '0', 'data-markers': '0', 'data-nonfinite': '0' });
    this.logBtn = el('button', { class: 'tog', type: 'button', title: 'logarithmic y-axis for this chart (zeros and negatives: symmetric log)', onclick: () => ctx.toggle('log', this.key) }, 'log');
    this.allBtn = el('button', { class: 'tog', type: 'button', title: 'y-range: every value (off: the robust range that leaves outliers out, marked at the edge)', onclick: () => ctx.toggle('all', this.key) }, 'show all');
    this.note = el('span', { class: 'chart-note muted' });
    this.readout = el('span', { class: 'readout muted' });
    this.legend = el('div', { class: 'legend' });
    this.plot = el('div', { class: 'plot' });
    this.box.append(el('div', { class: 'chart-head' }, el('h3', {}, spec.title), this.note, el('span', { class: 'spacer' }),
      this.readout, this.logBtn, this.allBtn), this.legend, this.plot);
    this.buildLegend();
  }

  get log() { return this.ctx.view().log.includes(this.key); }
  get all() { return this.ctx.view().all.includes(this.key); }

  buildLegend() {
    this.legendValues = this.lines.map((l, i) => {
      const v = el('span', { class: 'lv' });
      const item = el('span', { class: 'li', 'data-series': l.name, 'data-run': l.run, title: 'click: show / hide',
        onclick: () => { this.toggleLine(i, item); } },
      el('i', { class: 'sw', style: 'background:' + l.color + (l.dash ? ';background:repeating-linear-gradient(90deg,' + l.color + ' 0 5px,transparent 5px 8px)' : '') }),
      el('span', { class: 'ln' }, l.label), v);
      l.item = item;
      this.legend.append(item);
      return v;
    });
  }

  toggleLine(i, item) {
    if (this.hidden.has(i)) this.hidden.delete(i); else this.hidden.add(i);
    item.classList.toggle('off', this.hidden.has(i));
    this.update(true);
  }

  /** uPlot series indices of line i: [raw] or [raw, smoothed]. */
  uIdx(i) { return this.sm > 0 ? [1 + 2 * i, 2 + 2 * i] : [1 + i]; }

  width() { return Math.max(300, this.ctx.width()); }

  /** (Re)creates the uPlot instance; the structure depends on smoothing, log mode and axes. */
  build(distr) {
    if (this.u) this.u.destroy();
    const th = themeColors();
    this.sm = this.ctx.view().sm;
    this.distr = distr;
    this.timeMode = this.spec.compare ? 'step' : this.ctx.view().x;
    const scales = { x: { time: false, range: () => this.xr } };
    const scaleKeys = Array.from(new Set(this.lines.map((l) => l.scale || 'y')));
    for (const k of scaleKeys) {
      scales[k] = { range: () => this.yr[k] || [0, 1] };
      if (distr.d === 3) Object.assign(scales[k], { distr: 3, log: 10 });
      if (distr.d === 4) Object.assign(scales[k], { distr: 4, log: 10, asinh: distr.asinh[k] || 1 });
    }
    const useries = [{}];
    const paths = densePaths();
    this.lines.forEach((l, i) => {
      const dim = () => this.dimmed(i);
      const base = { scale: l.scale || 'y', spanGaps: false, points: { show: false }, dash: l.dash, label: l.label, paths: l.dash ? undefined : paths };
      const faint = () => withAlpha(l.color, dim() ? 0.08 : 0.25);
      const full = () => (dim() ? withAlpha(l.color, 0.3) : l.color);
      if (this.sm > 0) useries.push({ ...base, stroke: faint, width: 1 / devicePixelRatio });
      useries.push({ ...base, stroke: full, width: this.lineWidth(i) });
    });
    const grid = { stroke: th.grid, width: 1 };
    const xAxis = { stroke: th.muted, grid, ticks: { stroke: th.grid, size: 4 }, space: 70, size: 30 };
    if (this.timeMode === 'step') {
      xAxis.values = (u, splits, ai, space, incr) => (this.xTicks = splits.map((v) => fmtStep(v, incr)));
    } else {
      xAxis.splits = (u) => this.timeSplits(u);
      xAxis.values = (u, splits) => (this.xTicks = splits.map((s) => this.timeLabel(s)));
    }
    const room = () => Math.max(2, Math.floor((this.u ? this.u.bbox.height / devicePixelRatio : CHART_HEIGHT - 60) / 22));
    const yAxis = (k, side, color) => ({
      scale: k, side, size: side === 3 ? AXIS_SIZE : 64, stroke: color || th.muted, grid: side === 3 ? grid : { show: false },
      ticks: { stroke: th.grid },
      // Log axes: decades (or 1-2-5 in a narrow range), thinned to the room there is.
      splits: distr.d ? (u, ai, min, max) => logSplits(min, max, room(), distr.d === 4, (distr.asinh || {})[k] || 1) : undefined,
      filter: distr.d ? (u, splits) => splits : undefined,  // uPlot's own log filter would hide some of them
      values: (u, splits, ai, space, incr) => {
        const labels = distr.d ? fmtLogTicks(splits, Infinity) : fmtTicks(splits, incr);  // log splits are thinned already
        if (side === 3) this.yTicks = labels.filter((s) => s != null);
        return labels;
      },
    });
    const axes = [xAxis, yAxis(scaleKeys[0], 3)];
    scaleKeys.slice(1).forEach((k) => axes.push(yAxis(k, 1, this.lines.find((l) => l.scale === k).color)));
    const opts = {
      width: this.width(), height: CHART_HEIGHT,
      scales, series: useries, axes,
      legend: { show: false },
      cursor: { drag: { x: true, y: false, setScale: false }, sync: { key: 'losslens' }, points: { show: false }, focus: { prox: -1 } },
      hooks: {
        draw: [(u) => this.drawOverlay(u)],
        setSelect: [(u) => this.onSelect(u)],
        setCursor: [(u) => this.onCursor(u)],
      },
    };
    this.plot.replaceChildren();
    this.u = new uPlot(opts, [[]].concat(useries.slice(1).map(() => [])), this.plot);
    this.u.over.addEventListener('click', (ev) => this.onClick(ev));
    this.u.over.addEventListener('dblclick', () => this.ctx.clearZoom());
    this.u.over.addEventListener('mouseleave', () => this.ctx.hover(null));
    this.logBtn.classList.toggle('on', this.log);
    this.allBtn.classList.toggle('on', this.all);
  }

  /** Line widths and dimming after the selected finding changed. */
  restyle() {
    if (!this.u) return;
    this.lines.forEach((l, i) => { const idx = this.uIdx(i); this.u.series[idx[idx.length - 1]].width = this.lineWidth(i); });
    this.u.redraw(true);
  }

  lineWidth(i) {
    const l = this.lines[i];
    const sel = this.ctx.selectedSeries();
    return (sel && !this.spec.compare && l.name === sel) ? 3 : l.width || 1.5;
  }
  dimmed(i) {
    const sel = this.ctx.selectedSeries();
    return !!sel && !this.spec.compare && this.lines.some((l) => l.name === sel) && this.lines[i].name !== sel;
  }

  /** Recomputes the aligned data from the tracks and draws. `rebuildOk`: may rebuild uPlot. */
  update(rebuildOk = true) {
    const view = this.ctx.view();
    this.xr = this.ctx.xRange(this);
    const [x0, x1] = this.xr;
    const sm = view.sm;
    this.tracks = this.lines.map((l) => trackFor(l.run, l.name));
    // Each line's points in view (one beyond each side, so lines reach the edges).
    const slices = this.tracks.map((t, i) => {
      if (!t || this.hidden.has(i)) return { pts: [], off: 0 };
      const a = Math.max(0, lowerBound(t.pts, x0) - 1), b = Math.min(t.pts.length, lowerBound(t.pts, x1 + 1e-9) + 1);
      return { pts: t.pts, a, b };
    });
    const xs = mergeSteps(slices.map((s) => (s.pts.length ? s.pts.slice(s.a, s.b).map((p) => p[0]) : [])));
    const index = new Map();
    for (let k = 0; k < xs.length; k++) index.set(xs[k], k);
    const finiteByScale = {};
    this.nonfinite = [];
    this.smoothed = [];
    const ys = [];
    let count = 0;
    let anyNonPositive = {};
    this.lines.forEach((l, i) => {
      const s = slices[i];
      const t = this.tracks[i];
      const scale = l.scale || 'y';
      const raw = new Array(xs.length);
      const smooth = sm > 0 ? new Array(xs.length) : null;
      const norm = this.spec.normalise && t ? baseline(t) : 1;
      let sv = null;
      if (t && sm > 0 && s.pts.length) sv = ema(t.pts.map((p) => p[1]), sm);
      this.smoothed[i] = sv;
      const fin = finiteByScale[scale] || (finiteByScale[scale] = []);
      if (s.pts.length) {
        for (let j = s.a; j < s.b; j++) {
          const p = s.pts[j];
          const k = index.get(p[0]);
          const v = p[1] / norm;
          count++;
          if (!Number.isFinite(v)) {
            raw[k] = null;  // a gap, and a marker
            if (p[0] >= x0 && p[0] <= x1) this.nonfinite.push({ line: i, step: p[0], v: p[1] });
            if (smooth) smooth[k] = null;
            continue;
          }
          raw[k] = v;
          if (smooth) smooth[k] = sv[j] / norm;
          if (p[0] >= x0 && p[0] <= x1) {
            fin.push(v);
            if (v <= 0) anyNonPositive[scale] = Math.min(anyNonPositive[scale] ?? Infinity, v);
          }
        }
      }
      ys.push(raw);
      if (smooth) ys.push(smooth);
    });
    // Log: a real log axis, or symmetric log (asinh) when zeros or negatives are in view.
    let distr = { d: 0 };
    if (this.log) {
      const asinh = {};
      let sym = false;
      for (const [k, vals] of Object.entries(finiteByScale)) {
        if (anyNonPositive[k] !== undefined) sym = true;
        const pos = vals.filter((v) => v > 0);
        const mn = pos.length ? Math.min(...sampleMin(pos)) : 1;
        asinh[k] = 10 ** Math.floor(Math.log10(mn));
      }
      distr = sym ? { d: 4, asinh } : { d: 3 };
    }
    const structure = JSON.stringify(distr) + '|' + (sm > 0) + '|' + view.x;
    if (!this.u || (rebuildOk && structure !== this.structure)) {
      this.structure = structure;
      this.build(distr);
    }
    // Findings in view: on the curves, or (too many for that) as a rug under them, for which
    // the y-range makes room at the bottom.
    this.findingsInView = [];
    if (!this.spec.compare) {
      this.lines.forEach((l, i) => {
        if (this.hidden.has(i)) return;
        for (const f of this.ctx.findingsOn(l.name)) {
          for (const sp of f.spans && f.spans.length ? f.spans : [f]) {
            if (sp.last_step >= x0 && sp.first_step <= x1) this.findingsInView.push([i, f, Math.max(sp.first_step, x0)]);
          }
        }
      });
    }
    this.rugRows = new Map();
    if (this.findingsInView.length > (this.width() - 140) / 12) {
      for (const [i] of this.findingsInView) if (!this.rugRows.has(i)) this.rugRows.set(i, this.rugRows.size);
    }
    const rugPx = this.rugRows.size ? this.rugRows.size * RUG_ROW + 6 : 0;
    const share = rugPx / Math.max(40, CHART_HEIGHT - 34 - rugPx);
    this.clippedAny = false;
    for (const [k, vals] of Object.entries(finiteByScale)) {
      let r;
      if (distr.d === 4) {
        const pos = vals.filter((v) => v > 0);
        const [, hi] = yRange(pos.length ? pos : [1], { log: true, all: this.all });
        const mn = anyNonPositive[k];
        r = [mn < 0 ? mn * 1.5 : 0, hi];
      } else {
        r = yRange(vals, { log: distr.d === 3, all: this.all });
        this.clippedAny = this.clippedAny || r[2];
        if (share > 0 && distr.d === 3) r[0] = r[0] / (r[1] / r[0]) ** share;
        else if (share > 0) r[0] -= (r[1] - r[0]) * share;
      }
      this.yr[k] = [r[0], r[1]];
    }
    this.data = [xs].concat(ys);
    this.u.setData(this.data, true);
    setData(this.box, { points: count, nonfinite: this.nonfinite.length });
    setData(this.box, { distr: distr.d || 1, exact: this.tracks.every((t) => t && t.bw === 1) ? 1 : 0 });
    const notes = [];
    if (this.clippedAny && !this.all) notes.push('outliers outside the range (▲▼ at the edge)');
    if (this.rugRows.size) notes.push(this.findingsInView.length + ' findings: ticks along the bottom, a row each for ' + Array.from(this.rugRows.keys()).map((i) => this.lines[i].name).join(', ') + ' (zoom in for markers on the curves)');
    if (this.spec.note) notes.push(this.spec.note);
    const note = notes.join(' · ');
    if (this.note.textContent !== note) this.note.textContent = note;
    if (this.hoverStep != null) this.showValues(this.hoverStep);
    return count;
  }

  resize() { if (this.u) this.u.setSize({ width: this.width(), height: CHART_HEIGHT }); }
  destroy() { if (this.u) this.u.destroy(); this.u = null; this.box.remove(); }

  // ------------------------------------------------------------ x axis in time

  timeSplits(u) {
    const tm = this.ctx.timeMap();
    const [s0, s1] = [u.scales.x.min, u.scales.x.max];
    if (!tm || !tm.ok) return [];
    const t0 = tm.timeAt(s0), t1 = tm.timeAt(s1);
    const origin = this.timeMode === 'rel' ? tm.t0 : new Date().getTimezoneOffset() * -60;
    const n = Math.max(2, Math.floor(u.bbox.width / devicePixelRatio / 110));
    this.timeSpan = t1 - t0;
    return timeTicks(t0, t1, n, origin).map((t) => tm.stepAt(t));
  }
  timeLabel(step) {
    const tm = this.ctx.timeMap();
    if (!tm) return '';
    const t = tm.timeAt(step);
    // Hundredths of a second for a run shorter than a second (its ticks are that close).
    const q = (this.timeSpan || 0) < 1 ? 100 : 10;
    return this.timeMode === 'rel' ? fmtRelative(Math.round((t - tm.t0) * q) / q, q === 100 ? 2 : 1) : fmtWall(t, this.timeSpan || 0);
  }

  // ------------------------------------------------------------ interaction

  onSelect(u) { zoomToSelection(this, u); }

  onCursor(u) {
    // The chart under the mouse sets the step for every chart (charts redrawn at different
    // moments of a live run have slightly different x-ranges, so each chart's own cursor
    // position would read a different step).
    if (!u.cursor.event) return;
    const left = u.cursor.left;
    if (left == null || left < 0) { this.ctx.hover(null); return; }
    const step = Math.round(u.posToVal(left, 'x'));
    this.ctx.hover(step);
    const m = this.markerAt(left, u.cursor.top);
    u.over.style.cursor = m ? 'pointer' : '';
    const f = m && m.f;
    const title = f ? f.severity + ': ' + f.kind + ' (steps ' + f.first_step + '–' + f.last_step + (f.episodes > 1 ? ', ' + f.episodes + ' episodes' : '') + ') — click to zoom' : '';
    if (u.over.title !== title) u.over.title = title;
  }

  /** Values at `step`: each line's point in the bucket that holds the step. */
  showValues(step) {
    const tm = this.timeMode !== 'step' ? this.ctx.timeMap() : null;
    let text = 'step ' + fmtStep(step);
    if (tm && tm.ok) text += ' · ' + (this.timeMode === 'rel' ? fmtRelative(Math.round(tm.timeAt(step) - tm.t0)) : new Date(tm.timeAt(step) * 1000).toLocaleTimeString());
    this.readout.textContent = text;
    this.lines.forEach((l, i) => {
      const t = this.tracks[i];
      let s = '';
      if (t && t.pts.length) {
        const k = bucketIndex(t.pts, t.bw, step);
        if (k >= 0) {
          const norm = this.spec.normalise ? baseline(t) : 1;
          s = fmt(t.pts[k][1] / norm);
          if (this.smoothed[i]) s = fmt(this.smoothed[i][k] / norm) + ' (raw ' + s + ')';
          if (t.bw > 1) s += ' ·' + t.bw;
        }
      }
      this.legendValues[i].textContent = s;
    });
  }
  clearValues() { this.readout.textContent = ''; for (const v of this.legendValues) v.textContent = ''; }

  /** Shows the values at `step` (null: none), as set by the chart under the mouse. */
  hoverAt(step) {
    this.hoverStep = step;
    if (step == null) this.clearValues(); else this.showValues(step);
  }

  markerAt(x, y) {
    let best = null, bd = 9;
    for (const m of this.markers) {
      const d = Math.hypot(m.x - x, m.y - y);
      if (d < bd || (d === bd && best && m.len < best.len)) { best = m; bd = d; }
    }
    return best;
  }

  onClick(ev) {
    if (this.dragged) { this.dragged = false; return; }
    const r = this.u.over.getBoundingClientRect();
    const m = this.markerAt(ev.clientX - r.left, ev.clientY - r.top);
    if (m) this.ctx.selectFinding(m.id, true);
  }

  // ------------------------------------------------------------ overlay

  drawOverlay(u) {
    const ctx = u.ctx;
    const { left, top, width, height } = u.bbox;
    const px = devicePixelRatio || 1;
    const [xmin, xmax] = [u.scales.x.min, u.scales.x.max];
    const th = themeColors();
    ctx.save();
    ctx.beginPath();
    ctx.rect(left, top, width, height);
    ctx.clip();
    // The finding zoomed to: a faint band over its steps, on the chart of its series only.
    const sel = this.ctx.selectedFinding();
    if (sel && !this.spec.compare && this.lines.some((l) => l.name === sel.series)) {
      const spans = sel.spans && sel.spans.length ? sel.spans : [sel];
      ctx.fillStyle = withAlpha(SEVERITY_COLOR[sel.severity] || '#888888', 0.13);
      for (const s of spans) {
        const a = u.valToPos(s.first_step, 'x', true), b = u.valToPos(s.last_step, 'x', true);
        ctx.fillRect(a, top, Math.max(b - a, 3 * px), height);
      }
    }
    // Values outside the robust range: a triangle at the edge, the extreme one labelled.
    this.clipped = [];
    ctx.font = (10 * px) + 'px system-ui, sans-serif';
    let far = null;
    this.lines.forEach((l, i) => {
      if (this.hidden.has(i)) return;
      const t = this.tracks[i];
      const r = this.yr[l.scale || 'y'];
      if (!t || !r || this.all || this.distr.d === 4) return;
      const norm = this.spec.normalise ? baseline(t) : 1;
      let lastX = -1e9;
      const tri = new Path2D();
      for (let j = Math.max(0, lowerBound(t.pts, xmin)); j < t.pts.length && t.pts[j][0] <= xmax; j++) {
        const v = t.pts[j][1] / norm;
        if (!Number.isFinite(v) || (v >= r[0] && v <= r[1])) continue;
        const up = v > r[1];
        const x = u.valToPos(t.pts[j][0], 'x', true);
        if (!far || Math.abs(v) > Math.abs(far.v)) far = { v, x, up };
        if (x - lastX < 4 * px) continue;
        lastX = x;
        this.clipped.push({ line: i, step: t.pts[j][0], v });
        const y = up ? top + 2 * px : top + height - 2 * px;
        tri.moveTo(x - 4 * px, up ? y + 6 * px : y - 6 * px); tri.lineTo(x + 4 * px, up ? y + 6 * px : y - 6 * px); tri.lineTo(x, y);
        tri.closePath();
      }
      ctx.fillStyle = l.color;
      ctx.fill(tri);
    });
    if (far) {  // the most extreme value left out, labelled once
      ctx.fillStyle = th.fg;
      ctx.textAlign = far.x > left + width - 80 * px ? 'right' : 'left';
      ctx.fillText((far.up ? 'max ' : 'min ') + fmt(far.v), far.x + (ctx.textAlign === 'left' ? 8 : -8) * px, far.up ? top + 11 * px : top + height - 5 * px);
    }
    // NaN / Inf: red dots labelled at the top (NaN, +Inf) or bottom (-Inf).
    ctx.textAlign = 'center';
    for (const p of this.nonfinite) {
      const x = u.valToPos(p.step, 'x', true);
      const y = p.v === -Infinity ? top + height - 8 * px : top + 14 * px;
      ctx.fillStyle = '#d63b3b';
      ctx.beginPath(); ctx.arc(x, y, 4 * px, 0, 2 * Math.PI); ctx.fill();
      ctx.fillText(fmt(p.v), x, p.v === -Infinity ? y - 7 * px : y + 14 * px);
    }
    // Findings: a diamond on the curve of the series they name, at the start of each episode.
    // Where they are too many for that (a long run with hundreds of findings would hide its
    // curves), a rug instead: a short tick per episode along the bottom of the plot, one row
    // per named series, in the order of the legend. One path per severity either way.
    this.markers = [];
    const perSeries = {};
    if (!this.spec.compare) {
      const found = this.findingsInView || [];
      const rows = this.rugRows || new Map();
      const rug = rows.size > 0;
      const paths = {};
      const seen = new Set();
      for (const [i, f, step] of found) {
        const l = this.lines[i];
        const x = u.valToPos(step, 'x', true);
        let y;
        if (rug) {
          y = top + height - (rows.get(i) * RUG_ROW + 5) * px;
        } else {
          const t = this.tracks[i];
          let yv = null;
          if (t && t.pts.length) {
            const k = bucketIndex(t.pts, t.bw, step);
            const kk = k >= 0 ? k : Math.min(t.pts.length - 1, lowerBound(t.pts, step));
            const v = this.smoothed[i] ? this.smoothed[i][kk] : t.pts[kk][1];
            if (Number.isFinite(v)) yv = v / (this.spec.normalise ? baseline(t) : 1);
          }
          y = yv == null ? top + 6 * px : u.valToPos(yv, l.scale || 'y', true);
          y = Math.min(top + height - 6 * px, Math.max(top + 6 * px, y));
        }
        this.markers.push({ f, id: f.id, series: l.name, x: (x - left) / px, y: (y - top) / px, len: f.last_step - f.first_step });
        perSeries[l.name] = (perSeries[l.name] || 0) + 1;
        // Markers closer than 3 px are drawn once (all of them stay clickable).
        const key = f.severity + Math.round(x / (3 * px)) + ',' + Math.round(y / (3 * px));
        if (seen.has(key)) continue;
        seen.add(key);
        const path = paths[f.severity] || (paths[f.severity] = new Path2D());
        if (rug) {
          path.rect(Math.round(x - px), Math.round(y - 3 * px), 2 * px, 6 * px);
        } else {
          const r = (sel && sel.id === f.id ? 7 : 5) * px;
          path.moveTo(x, y - r); path.lineTo(x + r, y); path.lineTo(x, y + r); path.lineTo(x - r, y); path.closePath();
        }
      }
      ctx.strokeStyle = th.bg;
      ctx.lineWidth = 1;  // a hairline outline: cheap for thousands of markers
      for (const sev of ['info', 'warning', 'error']) {  // the worst on top
        if (!paths[sev]) continue;
        ctx.fillStyle = SEVERITY_COLOR[sev];
        if (!rug) ctx.stroke(paths[sev]);
        ctx.fill(paths[sev]);
      }
      this.rug = rug;
    }
    ctx.restore();
    // What is on the screen, for tests and for people reading the DOM (uPlot applies scales
    // lazily, so here rather than after setData).
    const ys = u.scales[this.lines[0]?.scale || 'y'];
    setData(this.box, { xmin, xmax, ymin: ys?.min, ymax: ys?.max, yticks: (this.yTicks || []).join('|'),
      xticks: (this.xTicks || []).filter((t) => t != null).join('|'), axes: u.axes.length - 1,
      markers: this.markers.length, markerSeries: JSON.stringify(perSeries), clipped: this.clipped.length, rug: this.rug ? 1 : 0 });
    this.ctx.drawn(this);
  }
}

/**
 * A drag across a chart (or the lanes) selects a step range: every chart zooms to it. Marks
 * `owner.dragged` so that the click ending the drag does not also pick a finding.
 */
export function zoomToSelection(owner, u) {
  if (!u.select || u.select.width < 3) return;
  const from = Math.max(0, Math.floor(u.posToVal(u.select.left, 'x')));
  const to = Math.ceil(u.posToVal(u.select.left + u.select.width, 'x'));
  u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
  owner.dragged = true;
  owner.ctx.setZoom(from, Math.max(from + 1, to));
}

/** Sets data-* attributes that changed (a write, even of the same value, costs a style pass). */
export function setData(elem, values) {
  for (const [k, v] of Object.entries(values)) {
    const s = String(v);
    if (elem.dataset[k] !== s) elem.dataset[k] = s;
  }
}

// The lowest few values of a long list without spreading it into Math.min's arguments.
function sampleMin(a) { let m = Infinity; for (const v of a) if (v < m) m = v; return [m]; }

/** A task loss's scale for the "normalised" view: the median of its first ten finite values. */
function baseline(t) {
  if (t.base !== undefined) return t.base;
  const first = [];
  for (const p of t.pts) { if (Number.isFinite(p[1])) first.push(p[1]); if (first.length === 10) break; }
  first.sort((a, b) => a - b);
  const m = first.length ? first[first.length >> 1] : 1;
  t.base = m !== 0 && Number.isFinite(m) ? Math.abs(m) : 1;
  return t.base;
}
