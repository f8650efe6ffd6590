// Findings lanes under the charts: one row per finding kind (or severity), each incident a bar
// per episode over its steps (a thin line joins the episodes, "×N" counts them), on the same
// x-axis as the charts (zoom, cursor). Click a bar: the finding under the cursor is selected.
/* global uPlot */
import { el, themeColors } from './state.js';
import { setData, zoomToSelection } from './charts.js';
import { fmtStep, SEVERITY_COLOR, SEVERITY_RANK } from './util.js';

const LANE_H = 20;
const AXIS_SIZE = 132;  // as charts.js: plots line up
const X_AXIS = 28;

export class Lanes {
  constructor(ctx) {
    this.ctx = ctx;
    this.box = el('div', { class: 'chart lanes', id: 'lanes', 'data-lanes': '0', 'data-bars': '0' });
    this.plot = el('div', { class: 'plot' });
    this.box.append(this.plot);
    this.groups = [];
    this.bars = [];
    this.xr = [0, 1];
  }

  height() { return Math.max(1, this.groups.length) * LANE_H + X_AXIS + 6; }

  build() {
    if (this.u) this.u.destroy();
    const th = themeColors();
    const opts = {
      width: Math.max(300, this.ctx.width()), height: this.height(),
      scales: { x: { time: false, range: () => this.xr }, y: { range: () => [0, Math.max(1, this.groups.length)] } },
      series: [{}, { show: false }],
      legend: { show: false },
      axes: [
        { stroke: th.muted, grid: { stroke: th.grid, width: 1 }, ticks: { stroke: th.grid, size: 4 }, space: 70, size: X_AXIS,
          values: (u, splits, ai, space, incr) => splits.map((v) => fmtStep(v, incr)) },
        { scale: 'y', size: AXIS_SIZE, values: (u, s) => s.map(() => ''), grid: { show: false }, ticks: { show: false } },
      ],
      cursor: { drag: { x: true, y: false, setScale: false }, sync: { key: 'losslens' }, points: { show: false }, y: false },
      hooks: {
        draw: [(u) => this.draw(u)],
        setSelect: [(u) => this.onSelect(u)],
        setCursor: [(u) => this.onCursor(u)],
      },
    };
    this.plot.replaceChildren();
    this.u = new uPlot(opts, [[], []], this.plot);
    this.u.over.addEventListener('click', (ev) => this.onClick(ev));
    this.u.over.addEventListener('dblclick', () => this.ctx.clearZoom());
    this.lanesBuilt = this.groups.length;
  }

  /** Regroups the (filtered) findings and redraws. */
  update() {
    const by = this.ctx.view().lanes;
    const map = new Map();
    for (const f of this.ctx.visibleFindings()) {
      const key = by === 'severity' ? f.severity : f.kind;
      let g = map.get(key);
      if (!g) map.set(key, (g = { key, worst: -1, list: [] }));
      g.list.push(f);
      g.worst = Math.max(g.worst, SEVERITY_RANK[f.severity] ?? 0);
    }
    this.groups = Array.from(map.values()).sort((a, b) => (b.worst - a.worst) || (a.key < b.key ? -1 : 1));
    this.xr = this.ctx.xRange(null);
    if (!this.u || this.lanesBuilt !== this.groups.length) this.build();
    this.u.setData([[this.xr[0], this.xr[1]], [null, null]], true);
    setData(this.box, { lanes: this.groups.length });
    if (this.box.hidden !== (this.groups.length === 0)) this.box.hidden = this.groups.length === 0;
  }

  resize() { if (this.u) this.u.setSize({ width: Math.max(300, this.ctx.width()), height: this.height() }); }
  destroy() { if (this.u) this.u.destroy(); this.u = null; }

  draw(u) {
    const ctx = u.ctx;
    const { left, top, width } = u.bbox;
    const px = devicePixelRatio || 1;
    const th = themeColors();
    const [xmin, xmax] = [u.scales.x.min, u.scales.x.max];
    const sel = this.ctx.selectedFinding();
    this.bars = [];
    ctx.save();
    ctx.font = (11 * px) + 'px system-ui, sans-serif';
    ctx.textBaseline = 'middle';
    this.groups.forEach((g, li) => {
      const y0 = top + li * LANE_H * px, mid = y0 + LANE_H * px / 2;
      if (li % 2 === 1) { ctx.fillStyle = th.line; ctx.globalAlpha = 0.35; ctx.fillRect(left, y0, width, LANE_H * px); ctx.globalAlpha = 1; }
      // The lane's name and its number of incidents, in the axis gutter.
      const count = ' ' + g.list.length;
      ctx.textAlign = 'left';
      const maxW = (AXIS_SIZE - 10) * px - ctx.measureText(count).width;
      let label = g.key;
      while (label.length > 4 && ctx.measureText(label).width > maxW) label = label.slice(0, -2) + '…';
      ctx.fillStyle = SEVERITY_COLOR[['info', 'warning', 'error'][g.worst]] || th.fg;
      ctx.fillText(label, 4 * px, mid);
      ctx.fillStyle = th.muted;
      ctx.fillText(count, 4 * px + ctx.measureText(label).width, mid);
      ctx.save();
      ctx.beginPath(); ctx.rect(left, y0, width, LANE_H * px); ctx.clip();
      for (let fi = 0; fi < g.list.length; fi++) {
        const f = g.list[fi];
        if (f.last_step < xmin || f.first_step > xmax) continue;
        const color = SEVERITY_COLOR[f.severity] || '#888888';
        const spans = f.spans && f.spans.length ? f.spans : [f];
        const a = u.valToPos(f.first_step, 'x', true), b = u.valToPos(f.last_step, 'x', true);
        if (spans.length > 1) {  // the incident: a thin line over all its episodes
          ctx.fillStyle = color;
          ctx.fillRect(a, mid - 0.5 * px, Math.max(b - a, px), px);
        }
        for (const s of spans) {
          const sa = u.valToPos(s.first_step, 'x', true), sb = u.valToPos(s.last_step, 'x', true);
          const w = Math.max(sb - sa, 3 * px);
          ctx.fillStyle = SEVERITY_COLOR[s.severity] || color;
          ctx.fillRect(sa, mid - 5 * px, w, 10 * px);
          this.bars.push({ id: f.id, lane: li, x0: (sa - left) / px, x1: (sa + w - left) / px, len: f.last_step - f.first_step });
        }
        if (sel && sel.id === f.id) {
          ctx.strokeStyle = th.fg; ctx.lineWidth = 2 * px;
          ctx.strokeRect(a - 2 * px, mid - 7 * px, Math.max(b - a, 3 * px) + 4 * px, 14 * px);
        }
        if (f.episodes > 1) {  // "×N" where it fits before the next incident of the lane
          const label = '×' + f.episodes;
          const at = Math.max(b, a + 3 * px) + 3 * px;
          const next = fi + 1 < g.list.length ? u.valToPos(g.list[fi + 1].first_step, 'x', true) : left + width;
          if (at + ctx.measureText(label).width + 3 * px < Math.min(next, left + width)) {
            ctx.fillStyle = th.fg; ctx.textAlign = 'left';
            ctx.fillText(label, at, mid);
          }
        }
      }
      ctx.restore();
    });
    ctx.restore();
    setData(this.box, { bars: this.bars.length });
  }

  /** The finding under (x, y): in that lane, the shortest bar containing x (3 px slack). */
  hit(x, y) {
    const lane = Math.floor(y / LANE_H);
    let best = null;
    for (const b of this.bars) {
      if (b.lane !== lane || x < b.x0 - 3 || x > b.x1 + 3) continue;
      const inside = x >= b.x0 && x <= b.x1;
      const score = (inside ? 0 : 1e15) + b.len;
      if (!best || score < best.score) best = { id: b.id, score };
    }
    return best && best.id;
  }

  onCursor(u) {
    const id = u.cursor.left >= 0 && u.cursor.event ? this.hit(u.cursor.left, u.cursor.top) : null;
    u.over.style.cursor = id != null ? 'pointer' : '';
    const f = id != null ? this.ctx.finding(id) : null;
    u.over.title = f ? f.severity + ': ' + f.kind + ' on ' + f.series + ', steps ' + f.first_step + '–' + f.last_step + (f.episodes > 1 ? ' (' + f.episodes + ' episodes)' : '') : '';
  }

  onSelect(u) { zoomToSelection(this, u); }

  onClick(ev) {
    if (this.dragged) { this.dragged = false; return; }
    const r = this.u.over.getBoundingClientRect();
    const id = this.hit(ev.clientX - r.left, ev.clientY - r.top);
    if (id != null) this.ctx.selectFinding(id, true);
  }
}
