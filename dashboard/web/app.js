// losslens dashboard: run list and run view over the JSON API and the /ws websocket
// (protocol: docs/dashboard.md). Charts are uPlot; NaN/Inf points and findings are drawn as
// markers on top of them.
'use strict';

const token = new URLSearchParams(location.search).get('token') || '';
const PALETTE = ['#3b6fd6', '#e0542f', '#2f9e57', '#9b51e0', '#d69e2e', '#14a3b8', '#c2417a',
                 '#5a6b7d', '#7d9b12', '#b5651d'];
const SEVERITY_COLOR = { info: '#3b82f6', warning: '#e09b12', error: '#d63b3b' };

const $ = (sel) => document.querySelector(sel);
const el = (tag, attrs = {}, ...children) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') e.className = v; else if (k === 'style') e.style.cssText = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
};

function apiUrl(path, params = {}) {
  const q = new URLSearchParams(params);
  if (token) q.set('token', token);
  const s = q.toString();
  return path + (s ? '?' + s : '');
}

async function api(path, params) {
  const res = await fetch(apiUrl(path, params));
  const body = await res.json();
  if (!res.ok) throw new Error(body.error || res.statusText);
  return body;
}

// A JSON number, or "nan" / "inf" / "-inf" for non-finite values.
const toNumber = (v) => (typeof v === 'number' ? v : v === 'inf' ? Infinity : v === '-inf' ? -Infinity : NaN);
const fmt = (v) => (typeof v === 'number' ? (Math.abs(v) >= 1e4 || (v !== 0 && Math.abs(v) < 1e-3) ? v.toExponential(3) : +v.toPrecision(5)) : String(v));
const fmtDuration = (s) => (!(s >= 0) ? '-' : s < 60 ? s.toFixed(1) + 's' : s < 3600 ? Math.floor(s / 60) + 'm ' + Math.floor(s % 60) + 's' : Math.floor(s / 3600) + 'h ' + Math.floor((s / 60) % 60) + 'm');

// ---------------------------------------------------------------- state

const state = {
  runs: [],
  runId: null,      // run shown
  run: null,        // its /api/runs/{id}
  series: [],       // its /api/runs/{id}/series
  findings: new Map(),  // id -> finding
  events: new Map(),    // id -> event (attach, detach, drops, ...)
  compareId: null,
  lastStep: 0,      // largest step seen in the shown run
  charts: [],       // chart objects (see makeChart)
  ws: null,
  wsOpen: false,
  subscribed: false,
  generation: 0,    // bumps when the shown run changes; stale fetches are ignored
};

// ---------------------------------------------------------------- websocket

let reconnectDelay = 500;
function connect() {
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const ws = new WebSocket(proto + '//' + location.host + '/ws' + (token ? '?token=' + encodeURIComponent(token) : ''));
  state.ws = ws;
  ws.onopen = () => {
    state.wsOpen = true;
    reconnectDelay = 500;
    setConn(true);
    ws.send(JSON.stringify({ type: 'watch_runs' }));
    if (state.runId) ws.send(JSON.stringify({ type: 'subscribe', run: state.runId }));
    refreshRuns();
  };
  ws.onmessage = (ev) => {
    let msgs;
    try { msgs = JSON.parse(ev.data); } catch (e) { return; }
    if (!Array.isArray(msgs)) msgs = [msgs];
    for (const m of msgs) onMessage(m);
  };
  ws.onclose = () => {
    state.wsOpen = false;
    state.subscribed = false;
    setConn(false);
    updateLive();
    // The server may be restarting: try again, backing off up to 5 s.
    setTimeout(connect, reconnectDelay);
    reconnectDelay = Math.min(reconnectDelay * 2, 5000);
  };
}

function setConn(on) {
  const c = $('#conn');
  c.className = 'conn ' + (on ? 'on' : 'off');
  c.textContent = on ? 'connected' : 'offline';
}

function onMessage(m) {
  if (m.type === 'runs') {
    state.runs = m.runs;
    renderRuns();
    fillCompare();
  } else if (m.type === 'subscribed' && m.run === state.runId) {
    // Everything up to the acknowledgement comes from HTTP, everything after from deltas.
    state.subscribed = true;
    loadRun(state.runId, true);
  } else if (m.type === 'delta' && m.run === state.runId) {
    applyDelta(m);
  } else if (m.type === 'error') {
    console.warn('losslens:', m.error);
  }
}

// ---------------------------------------------------------------- run list

async function refreshRuns() {
  try {
    state.runs = (await api('/api/runs')).runs;
    renderRuns();
    fillCompare();
  } catch (e) { console.warn(e); }
}

function renderRuns() {
  const tbody = $('#runs tbody');
  tbody.replaceChildren(...state.runs.slice().reverse().map((r) => el('tr', {
    'data-run-id': r.id, onclick: () => { location.hash = '#/run/' + r.id; },
  },
  el('td', {}, r.id), el('td', {}, r.name),
  el('td', {}, el('span', { class: 'badge ' + r.status }, r.status),
    ...(r.dropped > 0 ? [el('span', { class: 'badge drops', title: dropText(r.dropped_samples, r.dropped_points).join('; ') }, 'drops')] : [])),
  el('td', {}, r.steps), el('td', {}, fmtDuration(toNumber(r.duration))),
  el('td', {}, r.findings),
  el('td', { class: r.worst_severity ? 'sev-' + r.worst_severity : 'muted' },
    r.worst_finding ? r.worst_severity + ': ' + r.worst_finding.kind : '-'))));
  $('#runs-empty').hidden = state.runs.length > 0;
  if (state.runId) {
    const r = state.runs.find((x) => x.id === state.runId);
    if (r && state.run && r.status !== state.run.status) { state.run.status = r.status; renderRunHead(); }
  }
}

function fillCompare() {
  const sel = $('#compare');
  const keep = sel.value;
  sel.replaceChildren(el('option', { value: '' }, '(none)'),
    ...state.runs.filter((r) => r.id !== state.runId).map((r) => el('option', { value: r.id }, '#' + r.id + ' ' + r.name)));
  sel.value = keep;
}

// ---------------------------------------------------------------- run view

function route() {
  const m = location.hash.match(/^#\/run\/(\d+)/);
  const id = m ? Number(m[1]) : null;
  $('#runs-view').hidden = id !== null;
  $('#run-view').hidden = id === null;
  if (id === state.runId) return;
  if (state.ws && state.wsOpen && state.runId) state.ws.send(JSON.stringify({ type: 'unsubscribe', run: state.runId }));
  state.runId = id;
  state.generation++;
  state.subscribed = false;
  state.compareId = null;
  state.lastStep = 0;
  state.events = new Map();
  $('#compare').value = '';
  destroyCharts();
  if (id === null) { refreshRuns(); return; }
  fillCompare();
  if (state.ws && state.wsOpen) state.ws.send(JSON.stringify({ type: 'subscribe', run: id }));
  loadRun(id, false);
}

async function loadRun(id, keepZoom) {
  const gen = state.generation;
  try {
    const [run, series, findings, events] = await Promise.all([
      api('/api/runs/' + id), api('/api/runs/' + id + '/series'), api('/api/runs/' + id + '/findings'),
      api('/api/runs/' + id + '/events')]);
    if (gen !== state.generation) return;
    state.run = run;
    state.series = series.series;
    state.lastStep = Math.max(state.lastStep, run.last_step || 0);
    state.findings = new Map(findings.findings.map((f) => [f.id, f]));
    // Events are keyed by id: the HTTP answer and the deltas may overlap.
    for (const e of events.events) state.events.set(e.id, e);
    renderRunHead();
    renderFindings();
    renderEvents();
    buildCharts(keepZoom);
  } catch (e) {
    $('#run-title').textContent = 'Run ' + id + ': ' + e.message;
  }
}

function renderRunHead() {
  const r = state.run;
  $('#run-title').textContent = '#' + r.id + ' ' + r.name;
  const s = $('#run-status');
  s.className = 'badge ' + r.status;
  s.textContent = r.status;
  renderDropWarning();
  updateLive();
}

// Queue overflow: the monitor's drops events count samples, the writer's count points.
const isMonitorDrop = (e) => e.detail && (e.detail.source === 'monitor' || e.detail.dropped_total !== undefined);
const dropTotal = (e) => Number(e.detail && (e.detail.total !== undefined ? e.detail.total : e.detail.dropped_total)) || 0;
function dropText(samples, points) {
  const out = [];
  if (samples > 0) out.push('monitor dropped ' + samples.toLocaleString('en-US') + ' samples (queue full) — raise attach_options::queue_capacity');
  if (points > 0) out.push('writer dropped ' + points.toLocaleString('en-US') + ' points (queue full) — raise writer_options::queue_capacity (attach_options::db_writer)');
  return out;
}

function renderDropWarning() {
  let samples = (state.run && state.run.dropped_samples) || 0, points = (state.run && state.run.dropped_points) || 0;
  for (const e of state.events.values()) {
    if (e.kind !== 'drops' || typeof e.detail !== 'object') continue;
    if (isMonitorDrop(e)) samples = Math.max(samples, dropTotal(e)); else points = Math.max(points, dropTotal(e));
  }
  const w = $('#drop-warning');
  const lines = dropText(samples, points);
  w.replaceChildren(...lines.map((t) => el('div', {}, '⚠ ' + t)));
  w.hidden = lines.length === 0;
  w.dataset.samples = String(samples);
  w.dataset.points = String(points);
}

const MAX_EVENT_ROWS = 200;
function renderEvents() {
  const list = Array.from(state.events.values()).sort((a, b) => a.id - b.id);
  const shown = list.slice(-MAX_EVENT_ROWS);
  $('#events-count').textContent = '(' + list.length + (list.length > shown.length ? ', the last ' + shown.length + ' shown' : '') + ')';
  $('#events tbody').replaceChildren(...shown.map((e) => el('tr', { class: e.kind === 'drops' ? 'drops' : '', 'data-event-id': e.id },
    el('td', {}, typeof e.time === 'number' ? new Date(e.time * 1000).toLocaleString() : String(e.time)),
    el('td', {}, e.step == null ? '-' : e.step),
    el('td', {}, e.kind),
    el('td', { class: 'detail' }, typeof e.detail === 'string' ? e.detail : JSON.stringify(e.detail)))));
}

function updateLive() {
  const live = !!(state.run && state.run.status === 'running' && state.wsOpen && state.subscribed);
  $('#live').hidden = !live;
  document.body.dataset.live = live ? '1' : '0';
}

// ---------------------------------------------------------------- charts

// Which series go on which chart.
// Series without points yet are left out (a delta with their first points rebuilds the charts).
function chartSpecs() {
  const present = state.series.filter((s) => s.count > 0);
  const names = present.map((s) => s.name);
  const byMax = (prefix) => present.filter((s) => s.name.startsWith(prefix))
    .sort((a, b) => (toNumber(b.max) || 0) - (toNumber(a.max) || 0)).map((s) => s.name);
  const k = Number($('#top-k').value);
  const specs = [
    { key: 'loss', title: 'Loss (total and per task)', series: names.filter((n) => n === 'loss' || n.startsWith('loss/')), compare: true },
    { key: 'grad', title: 'Gradient norm (total and top-' + k + ' layers)', series: names.filter((n) => n === 'grad_norm').concat(byMax('grad_norm/').slice(0, k)) },
    { key: 'task_grad', title: 'Per-task gradient norm', series: names.filter((n) => n.startsWith('task_grad_norm/')) },
    { key: 'lr', title: 'Learning rate', series: names.filter((n) => n === 'lr') },
    // Multi-process runs (attach with a process group): one line per rank, from rank 0's run.
    { key: 'rank_loss', title: 'Loss per rank', series: names.filter((n) => /^rank\/\d+\/loss$/.test(n)) },
    { key: 'rank_grad', title: 'Gradient norm per rank', series: names.filter((n) => /^rank\/\d+\/grad_norm$/.test(n)) },
    { key: 'rank_time', title: 'Step time per rank (s)', series: names.filter((n) => /^rank\/\d+\/step_time$/.test(n)) },
    { key: 'acc', title: 'Accuracy', series: names.filter((n) => n === 'accuracy') },
  ];
  const used = new Set(specs.flatMap((s) => s.series).concat(names.filter((n) => n.startsWith('grad_norm/'))));
  const other = names.filter((n) => !used.has(n));
  if (other.length) specs.push({ key: 'other', title: 'Other series', series: other });
  return specs.filter((s) => s.series.length);
}

function destroyCharts() {
  for (const c of state.charts) c.u.destroy();
  state.charts = [];
  $('#charts').replaceChildren();
}

function buildCharts(keepZoom, force = false) {
  const specs = chartSpecs();
  const same = specs.length === state.charts.length && specs.every((s, i) =>
    s.key === state.charts[i].key && s.series.join('\n') === state.charts[i].spec.series.join('\n'));
  if (same && keepZoom && !force) {  // same charts: refresh their data in place
    state.charts.forEach(fetchChart);
    return;
  }
  const zooms = new Map(keepZoom ? state.charts.map((c) => [c.key, c.zoom]) : []);
  destroyCharts();
  for (const spec of specs) {
    const c = makeChart(spec, zooms.get(spec.key) || null);
    state.charts.push(c);
    fetchChart(c);
  }
}

function plotWidth() { return Math.max(400, $('#charts').clientWidth - 20); }

function makeChart(spec, zoom) {
  const box = el('div', { class: 'chart', id: 'chart-' + spec.key, 'data-points': '0', 'data-markers': '0', 'data-nonfinite': '0' },
    el('h3', {}, spec.title));
  $('#charts').append(box);
  const c = { key: spec.key, spec, box, zoom, data: new Map(), nonfinite: [], u: null, fetchTimer: null };
  const log = $('#log-scale').checked;
  const labels = spec.series.slice();
  if (spec.compare && state.compareId) labels.push('#' + state.compareId + ' loss');
  const opts = {
    width: plotWidth(), height: 240,
    scales: { x: { time: false }, y: { distr: log ? 3 : 1 } },
    legend: { live: true },
    cursor: { drag: { x: true, y: false, setScale: false }, sync: { key: 'losslens' } },
    series: [{ label: 'step' }].concat(labels.map((n, i) => ({
      label: n, stroke: PALETTE[i % PALETTE.length], width: n === 'loss' || n === 'grad_norm' ? 2 : 1.25,
      spanGaps: true, points: { show: false }, dash: n.startsWith('#') ? [6, 4] : undefined,
      value: (u, v) => (v == null ? '-' : fmt(v)),
    }))),
    axes: [{}, { size: 80, values: (u, vals) => vals.map((v) => fmt(v)) }],
    hooks: {
      draw: [(u) => drawMarkers(c, u)],
      setSelect: [(u) => onSelect(c, u)],
    },
  };
  c.u = new uPlot(opts, [[]].concat(labels.map(() => [])), box);
  c.u.over.addEventListener('dblclick', () => { c.zoom = null; fetchChart(c); });
  c.u.over.addEventListener('click', (ev) => onChartClick(c, ev));
  return c;
}

// A drag selects a step range: the chart zooms into it, and the server sends that window at
// full resolution (or downsampled to the chart's width).
function onSelect(c, u) {
  if (!u.select || u.select.width < 2) return;
  const min = u.posToVal(u.select.left, 'x'), max = u.posToVal(u.select.left + u.select.width, 'x');
  c.zoom = { from: Math.max(0, Math.floor(min)), to: Math.max(0, Math.ceil(max)) };
  u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
  u.setScale('x', { min: c.zoom.from, max: c.zoom.to });
  clearTimeout(c.fetchTimer);
  c.fetchTimer = setTimeout(() => fetchChart(c), 100);
}

// Fetches the chart's window (the whole run, or the zoomed range), downsampled on the server
// with M4 buckets so spikes and NaN/Inf stay visible.
async function fetchChart(c) {
  const gen = state.generation;
  const params = { max_points: String(Math.max(100, Math.min(4000, plotWidth() * 2))) };
  if (c.zoom) { params.from = String(c.zoom.from); params.to = String(c.zoom.to); }
  const runId = state.runId;
  const jobs = c.spec.series.map((name) => api('/api/runs/' + runId + '/points', { ...params, series: name })
    .then((r) => [name, r.points, r.exact]).catch(() => [name, [], false]));
  if (c.spec.compare && state.compareId)
    jobs.push(api('/api/runs/' + state.compareId + '/points', { ...params, series: 'loss' })
      .then((r) => ['#' + state.compareId + ' loss', r.points]).catch(() => ['#' + state.compareId + ' loss', []]));
  const results = await Promise.all(jobs);
  if (gen !== state.generation) return;
  // Deltas that arrived while the request was under way are newer than its answer: keep them.
  if (!c.zoom) {
    for (const [name, pts] of results) {
      const last = pts.length ? pts[pts.length - 1][0] : -1;
      for (const p of c.data.get(name) || []) if (p[0] > last) pts.push(p);
    }
  }
  c.data = new Map(results.map(([name, pts]) => [name, pts]));
  c.box.dataset.exact = results.every((r) => r[2] !== false) ? '1' : '0';  // every point, not M4
  redraw(c);
}

// Aligns the series on one x array; non-finite values become markers (and gaps in the lines).
function redraw(c) {
  const log = $('#log-scale').checked;
  const names = c.u.series.slice(1).map((s) => s.label);
  const steps = new Set();
  for (const pts of c.data.values()) for (const p of pts) steps.add(p[0]);
  const xs = Array.from(steps).sort((a, b) => a - b);
  const index = new Map(xs.map((x, i) => [x, i]));
  const ys = [];
  c.nonfinite = [];
  let count = 0;
  names.forEach((name, si) => {
    const y = new Array(xs.length).fill(null);
    for (const [step, v] of c.data.get(name) || []) {
      count++;
      if (typeof v !== 'number') { c.nonfinite.push({ step, v, color: PALETTE[si % PALETTE.length] }); continue; }
      y[index.get(step)] = log && v <= 0 ? null : v;
    }
    ys.push(y);
  });
  c.u.setData([xs].concat(ys), !c.zoom);
  if (c.zoom) c.u.setScale('x', { min: c.zoom.from, max: c.zoom.to });
  c.box.dataset.points = String(count);
  c.box.dataset.nonfinite = String(c.nonfinite.length);
}

// Findings as bands and flags at their steps; NaN/Inf as red markers at the top (NaN, +Inf) or
// bottom (-Inf) of the plot.
function drawMarkers(c, u) {
  const ctx = u.ctx;
  const { left, top, width, height } = u.bbox;
  const px = devicePixelRatio || 1;
  const xmin = u.scales.x.min, xmax = u.scales.x.max;
  let markers = 0;
  ctx.save();
  ctx.beginPath();
  ctx.rect(left, top, width, height);
  ctx.clip();
  for (const f of state.findings.values()) {
    if (!findingOnChart(f, c)) continue;
    if (f.last_step < xmin || f.first_step > xmax) continue;
    const x0 = u.valToPos(f.first_step, 'x', true), x1 = u.valToPos(f.last_step, 'x', true);
    const color = SEVERITY_COLOR[f.severity] || '#888';
    ctx.fillStyle = color + '22';
    ctx.fillRect(x0, top, Math.max(x1 - x0, 2 * px), height);
    ctx.fillStyle = color;
    ctx.fillRect(x0 - px, top, 2 * px, height);
    ctx.beginPath();
    ctx.moveTo(x0 - 6 * px, top); ctx.lineTo(x0 + 6 * px, top); ctx.lineTo(x0, top + 10 * px);
    ctx.closePath(); ctx.fill();
    markers++;
  }
  ctx.font = (10 * px) + 'px sans-serif';
  ctx.textAlign = 'center';
  for (const p of c.nonfinite) {
    if (p.step < xmin || p.step > xmax) continue;
    const x = u.valToPos(p.step, 'x', true);
    const y = p.v === '-inf' ? top + height - 8 * px : top + 14 * px;
    ctx.fillStyle = '#d63b3b';
    ctx.beginPath(); ctx.arc(x, y, 4 * px, 0, 2 * Math.PI); ctx.fill();
    ctx.fillText(p.v, x, p.v === '-inf' ? y - 7 * px : y + 14 * px);
  }
  ctx.restore();
  c.box.dataset.markers = String(markers);
}

// Every chart marks every finding at its steps (a loss spike shows on the grad norm too).
function findingOnChart() { return true; }

function onChartClick(c, ev) {
  const u = c.u;
  const x = ev.offsetX;
  let best = null, bestDist = 8;
  for (const f of state.findings.values()) {
    if (!findingOnChart(f, c)) continue;
    const x0 = u.valToPos(f.first_step, 'x'), x1 = u.valToPos(f.last_step, 'x');
    const d = x < x0 ? x0 - x : x > x1 ? x - x1 : 0;
    if (d < bestDist) { best = f; bestDist = d; }
  }
  if (best) showFinding(best);
}

// ---------------------------------------------------------------- live updates

let refetchTimer = null;
function applyDelta(m) {
  if (state.run && m.status && m.status !== state.run.status) { state.run.status = m.status; renderRunHead(); }
  let newSeries = false;
  for (const [name, pts] of Object.entries(m.points || {})) {
    const known = state.series.find((s) => s.name === name);
    if (!known || known.count === 0) { newSeries = true; continue; }
    state.lastStep = Math.max(state.lastStep, pts[pts.length - 1][0]);
    for (const c of state.charts) {
      if (!c.spec.series.includes(name)) continue;
      const old = c.data.get(name) || [];
      const last = old.length ? old[old.length - 1][0] : -1;
      const fresh = pts.filter((p) => p[0] > last);  // the HTTP answer may overlap the delta
      if (!fresh.length) continue;
      c.data.set(name, old.concat(fresh));
    }
  }
  for (const f of m.findings || []) state.findings.set(f.id, f);
  if (state.findings.size) renderFindings();  // new findings, and the timeline grows
  if (m.events && m.events.length) {
    for (const e of m.events) state.events.set(e.id, e);
    renderEvents();
    renderDropWarning();
  }
  if (newSeries) { loadRun(state.runId, true); return; }
  for (const c of state.charts) redraw(c);
  // Raw points pile up while live: now and then swap them for the server's downsampled view.
  const big = state.charts.some((c) => Array.from(c.data.values()).some((p) => p.length > 6000));
  if (big && !refetchTimer) refetchTimer = setTimeout(() => { refetchTimer = null; state.charts.forEach(fetchChart); }, 2000);
}

// ---------------------------------------------------------------- findings

function renderFindings() {
  const list = Array.from(state.findings.values()).sort((a, b) => a.first_step - b.first_step);
  $('#findings-count').textContent = '(' + list.length + ')';
  $('#findings tbody').replaceChildren(...list.map((f) => el('tr', { onclick: () => showFinding(f), 'data-finding-id': f.id },
    el('td', {}, f.first_step === f.last_step ? f.first_step : f.first_step + '–' + f.last_step),
    el('td', { class: 'sev-' + f.severity }, f.severity),
    el('td', {}, f.kind + (f.evidence && f.evidence.rank !== undefined ? ' (rank ' + fmt(f.evidence.rank) + ')' : '') +
      (f.episodes > 1 ? ' (' + f.episodes + ' episodes)' : '')),
    el('td', {}, f.series),
    el('td', {}, f.message))));
  // Timeline: one tick per finding over the run's steps.
  const tl = $('#timeline');
  const end = Math.max(1, state.lastStep, ...list.map((f) => f.last_step));
  tl.replaceChildren(...list.map((f) => el('div', {
    class: 'tick', title: f.kind + ' at ' + f.first_step + ': ' + f.message, onclick: () => showFinding(f),
    style: 'left:' + (100 * f.first_step / end) + '%;width:' + Math.max(0.3, 100 * (f.last_step - f.first_step) / end) + '%;background:' + (SEVERITY_COLOR[f.severity] || '#888'),
  })));
  for (const c of state.charts) c.u.redraw(false, false);
}

function showFinding(f) {
  const d = $('#finding-detail');
  const rows = (obj) => Object.entries(obj || {}).map(([k, v]) => el('tr', {}, el('td', { class: 'muted' }, k), el('td', {}, fmt(v))));
  d.replaceChildren(
    el('button', { class: 'close', onclick: () => { d.hidden = true; } }, '×'),
    el('h4', { class: 'sev-' + f.severity }, f.severity + ': ' + f.kind),
    el('div', { class: 'muted' }, 'series ' + f.series + ', steps ' + f.first_step + '–' + f.last_step +
      (f.episodes > 1 ? ', ' + f.episodes + ' episodes' : '') + ', rule ' + (f.rule && f.rule.name)),
    el('p', {}, f.message),
    ...(f.cause ? [el('p', { class: 'muted' }, 'preceded by: ' + f.cause)] : []),
    el('table', {}, el('tbody', {}, ...rows(f.evidence))),
    el('div', { class: 'advice' }, f.advice));
  d.hidden = false;
}

// ---------------------------------------------------------------- wiring

$('#log-scale').addEventListener('change', () => buildCharts(true, true));
$('#top-k').addEventListener('change', () => buildCharts(true));
$('#reset-zoom').addEventListener('click', () => { for (const c of state.charts) { c.zoom = null; fetchChart(c); } });
$('#compare').addEventListener('change', (ev) => {
  state.compareId = ev.target.value ? Number(ev.target.value) : null;
  buildCharts(true, true);
});
let resizeTimer = null;
window.addEventListener('resize', () => {
  clearTimeout(resizeTimer);
  resizeTimer = setTimeout(() => state.charts.forEach((c) => c.u.setSize({ width: plotWidth(), height: 240 })), 150);
});
window.addEventListener('hashchange', route);

route();
refreshRuns();
connect();
