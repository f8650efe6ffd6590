// losslens dashboard: the run list and the run view over the JSON API and the /ws websocket
// (protocol: docs/dashboard.md). The URL holds the whole view (util.js parseHash/viewHash).
// Updates are batched into animation frames: a websocket delta appends points to tracks and
// marks what changed; the next frame redraws only that.
import { state, $, el, api, token } from './state.js';
import { parseHash, viewHash, KIND_CHARTS, otherShape, assignColors, PALETTE, toNumber, fmt,
  fmtDuration, TimeMap, toCsv } from './util.js';
import { ensureFull, ensureWindow, dropWindows, acknowledged, appendDelta, onData, trackFor } from './data.js';
import { Chart } from './charts.js';
import { Lanes } from './lanes.js';
import { upsertFindings, refilter, visibleFindings, resetFindings, markSelected, showFinding,
  buildSeverityFilter, syncSeverityFilter, onKindToggle, passes } from './findings.js';
import { renderRuns } from './runs.js';

window.losslens = { state };  // for the browser test and for curious users (read only)
state.perf.start = performance.now();

// ---------------------------------------------------------------- view <-> URL

/** Changes the view: the URL is replaced (no history entry) and the page follows. */
function setView(patch, { push = false } = {}) {
  const next = { ...state.view, ...patch };
  const hash = viewHash(next);
  if (push) location.hash = hash;
  else history.replaceState(null, '', location.pathname + location.search + hash);
  applyView(next);
}

function applyView(v) {
  const old = state.view;
  state.view = v;
  document.body.dataset.page = v.page;
  if (v.page === 'runs') {
    if (state.run || old.page !== 'runs') closeRun();
    $('#runs-view').hidden = false;
    $('#run-view').hidden = true;
    $('#error-view').hidden = true;
    $('#crumb').textContent = '';
    renderRuns(v, (p) => setView(p));
    return;
  }
  $('#runs-view').hidden = true;
  if (!Number.isInteger(v.run) || v.run < 1) return showError('No run "' + location.hash.replace(/^#\/run\//, '').replace(/\?.*$/, '') + '"', 'Run ids are positive integers.');
  if (v.run !== old.run || old.page !== 'run' || !state.run) { openRun(v.run); return; }
  syncControls();
  const changed = (k) => JSON.stringify(v[k]) !== JSON.stringify(old[k]);
  if (changed('cmp') || changed('cs') || changed('tasks') || changed('k')) { buildCharts(); loadCompared(); }
  else if (changed('sm') || changed('x') || changed('log') || changed('all')) markAll();
  if (changed('from') || changed('to')) zoomChanged();
  if (changed('sev') || changed('hide') || changed('fq') || changed('lanes')) { refilter(v); markAll(); dirty.lanes = true; schedule(); }
  if (changed('f') && v.f != null && state.findings.has(v.f)) selectFinding(v.f, false);
  if (changed('f') && v.f == null) clearSelection(false);
}

function syncControls() {
  const v = state.view;
  $('#smoothing').value = String(v.sm);
  $('#smoothing-value').textContent = v.sm.toFixed(2);
  $('#x-mode').value = v.x;
  $('#tasks-mode').value = v.tasks;
  if (![...$('#top-k').options].some((o) => o.value === String(v.k))) $('#top-k').append(el('option', {}, String(v.k)));
  $('#top-k').value = String(v.k);
  $('#lanes-by').value = v.lanes;
  if (document.activeElement !== $('#finding-search')) $('#finding-search').value = v.fq;
  syncSeverityFilter(v);
}

function showError(title, text) {
  closeRun();
  $('#run-view').hidden = true;
  $('#error-view').hidden = false;
  $('#error-title').textContent = title;
  $('#error-text').textContent = text;
  document.body.dataset.page = 'error';
}

// ---------------------------------------------------------------- websocket

let reconnectDelay = 500, everConnected = false, retryAt = 0, bannerTimer = null;
function connect() {
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const ws = new WebSocket(proto + '//' + location.host + '/ws' + (token ? '?token=' + encodeURIComponent(token) : ''));
  state.ws = ws;
  ws.onopen = () => {
    state.wsOpen = true;
    everConnected = true;
    reconnectDelay = 500;
    setConn(true);
    ws.send(JSON.stringify({ type: 'watch_runs' }));
    for (const id of wantedRuns()) ws.send(JSON.stringify({ type: 'subscribe', run: id }));
  };
  ws.onmessage = (ev) => {
    let msgs;
    try { msgs = JSON.parse(ev.data); } catch (e) { return; }
    if (!Array.isArray(msgs)) msgs = [msgs];
    for (const m of msgs) onMessage(m);
  };
  ws.onclose = () => {
    state.wsOpen = false;
    state.subscribed.clear();
    setConn(false);
    updateLive();
    // The server may be restarting: try again, backing off up to 5 s.
    retryAt = Date.now() + reconnectDelay;
    setTimeout(connect, reconnectDelay);
    reconnectDelay = Math.min(reconnectDelay * 2, 5000);
  };
}

function setConn(on) {
  const c = $('#conn');
  c.className = 'conn ' + (on ? 'on' : 'off');
  c.textContent = on ? 'connected' : 'offline';
  const b = $('#offline-banner');
  clearInterval(bannerTimer);
  b.hidden = on || !everConnected;
  if (!b.hidden) {
    const tick = () => {
      const s = Math.max(0, Math.ceil((retryAt - Date.now()) / 1000));
      b.textContent = 'Offline: the losslens server is not answering; ' + (s > 0 ? 'reconnecting in ' + s + ' s' : 'reconnecting…') +
        '. The charts keep what they have and catch up when it is back.';
    };
    tick();
    bannerTimer = setInterval(tick, 500);
  }
}

const wantedRuns = () => (state.run ? [state.run.id, ...state.view.cmp.filter((id) => id !== state.run.id)] : []);
function subscribe(id) { if (state.wsOpen) state.ws.send(JSON.stringify({ type: 'subscribe', run: id })); }
function unsubscribe(id) { if (state.wsOpen) state.ws.send(JSON.stringify({ type: 'unsubscribe', run: id })); state.subscribed.delete(id); }

function onMessage(m) {
  if (m.type === 'runs') {
    setRuns(m.runs);
  } else if (m.type === 'subscribed') {
    // Everything up to the acknowledgement comes from HTTP, everything after from deltas.
    state.subscribed.add(m.run);
    acknowledged(m.run, m.last_steps);
    if (state.run && m.run === state.run.id) { refreshFindings(); refreshEvents(); updateLive(); }
  } else if (m.type === 'delta') {
    onDelta(m);
  } else if (m.type === 'error') {
    console.warn('losslens:', m.error);
  }
}

function setRuns(runs) {
  state.runs = runs;
  state.runsById = new Map(runs.map((r) => [r.id, r]));
  if (state.view.page === 'runs') renderRuns(state.view, (p) => setView(p));
  if (state.run) {
    const r = state.runsById.get(state.run.id);
    if (r && r.status !== state.run.status) { state.run.status = r.status; renderRunHead(); }
    renderCompareMenus();
  }
}

async function refreshRuns() {
  try { setRuns((await api('/api/runs')).runs); } catch (e) { console.warn(e); }
}

// ---------------------------------------------------------------- the run view

function closeRun() {
  if (state.run) for (const id of wantedRuns()) unsubscribe(id);
  state.generation++;
  state.run = null;
  state.series = [];
  state.seriesByName = new Map();
  state.seriesOf = new Map();
  state.store = new Map();
  state.ack = new Map();
  state.findings = new Map();
  state.events = new Map();
  state.selected = null;
  state.lastSelected = null;
  Object.assign(live, { rate: 0, at: 0, step: 0 });
  paintedStep = -1;
  destroyCharts();
  resetFindings();
}

async function openRun(id) {
  closeRun();
  const gen = state.generation;
  $('#error-view').hidden = true;
  $('#run-view').hidden = false;
  $('#run-title').textContent = 'Run #' + id + '…';
  $('#run-status').textContent = '';
  $('#run-meta').textContent = '';
  $('#events tbody').replaceChildren();
  syncControls();
  let run, series;
  try {
    [run, series] = await Promise.all([api('/api/runs/' + id), api('/api/runs/' + id + '/series')]);
  } catch (e) {
    if (gen !== state.generation) return;
    if (e.status === 404 || e.status === 400) {
      showError('No run #' + id, 'This database has no run with id ' + id + '. Pick one from the run list.');
    } else {
      showError('Run #' + id + ' cannot be read', e.message);
    }
    return;
  }
  if (gen !== state.generation) return;
  state.run = run;
  setSeries(id, series.series);
  state.lastStep = Math.max(0, ...series.series.map((s) => s.last_step ?? 0), run.last_step || 0);
  state.firstStep = Math.min(...series.series.filter((s) => s.count > 0).map((s) => s.first_step), state.lastStep);
  renderRunHead();
  buildCharts();
  for (const rid of wantedRuns()) subscribe(rid);
  loadCompared();
  refreshFindings();
  refreshEvents();
  renderCompareMenus();
}

function setSeries(run, list) {
  state.seriesOf.set(run, new Map(list.map((s) => [s.name, s])));
  if (state.run && run === state.run.id) {
    state.series = list;
    state.seriesByName = state.seriesOf.get(run);
  }
}

/** GET /api/runs/{shown run}/{what}; apply(answer) unless another run is shown by then. */
async function refreshOf(what, apply) {
  const gen = state.generation, id = state.run && state.run.id;
  if (!id) return;
  try {
    const r = await api('/api/runs/' + id + '/' + what);
    if (gen === state.generation) apply(r);
  } catch (e) { console.warn(e); }
}

const refreshFindings = () => refreshOf('findings', (r) => {
  addFindings(r.findings);
  if (state.view.f != null && state.selected !== state.view.f && state.findings.has(state.view.f)) selectFinding(state.view.f, false);
});

const refreshEvents = () => refreshOf('events', (r) => {
  for (const e of r.events) state.events.set(e.id, e);
  renderEvents();
  renderDropWarning();
});

function addFindings(list) {
  const changed = [];
  for (const f of list) {
    const old = state.findings.get(f.id);
    if (old && JSON.stringify(old) === JSON.stringify(f)) continue;
    state.findings.set(f.id, f);
    changed.push(f);
  }
  if (!changed.length) return;
  findingsVersion++;
  upsertFindings(changed, state.view, (id) => selectFinding(id, true));
  // Charts that hold a series named by a new finding redraw their markers; a named layer
  // that is not drawn yet joins the gradient chart.
  const names = new Set(changed.map((f) => f.series));
  if (changed.some((f) => state.seriesByName.get(f.series)?.kind === 'param_grad_norm' && !chartOf(f.series))) buildCharts();
  for (const c of state.charts) if (c.lines.some((l) => names.has(l.name))) markUrgent(c);
  dirty.lanes = true;
  schedule();
}


function renderRunHead() {
  const r = state.run;
  $('#run-title').textContent = '#' + r.id + ' ' + r.name;
  document.title = 'losslens · #' + r.id + ' ' + r.name;
  $('#crumb').textContent = '/ #' + r.id + ' ' + r.name;
  const s = $('#run-status');
  s.className = 'badge ' + r.status;
  s.textContent = r.status;
  const started = toNumber(r.started_at);
  const cfg = r.config && typeof r.config === 'object' ? Object.entries(r.config).slice(0, 6).map(([k, v]) => k + '=' + (typeof v === 'object' ? JSON.stringify(v) : v)).join(' ') : '';
  $('#run-meta').textContent = [Number.isFinite(started) ? 'started ' + new Date(started * 1000).toLocaleString() : '',
    fmtDuration(toNumber(r.duration)), (r.steps || 0).toLocaleString('en-US') + ' steps', r.host, cfg].filter(Boolean).join(' · ');
  renderDropWarning();
  updateLive();
}

function updateLive() {
  const live = !!(state.run && state.run.status === 'running' && state.wsOpen && state.subscribed.has(state.run.id));
  $('#live').hidden = !live;
  document.body.dataset.live = live ? '1' : '0';
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
}

const MAX_EVENT_ROWS = 200;
function renderEvents() {
  const list = Array.from(state.events.values()).sort((a, b) => a.id - b.id);
  const shown = list.slice(-MAX_EVENT_ROWS);
  $('#events-count').textContent = '(' + list.length + (list.length > shown.length ? ', the last ' + shown.length + ' shown' : '') + ')';
  $('#events tbody').replaceChildren(...shown.map((e) => el('tr', { class: e.kind === 'drops' ? 'drops' : '', 'data-event-id': e.id },
    el('td', {}, typeof e.time === 'number' ? new Date(e.time * 1000).toLocaleString() : String(e.time)),
    el('td', { class: 'num' }, e.step == null ? '-' : e.step),
    el('td', {}, e.kind),
    el('td', { class: 'detail mono' }, typeof e.detail === 'string' ? e.detail : JSON.stringify(e.detail)))));
}

// ---------------------------------------------------------------- charts

const plotWidth = () => Math.max(400, $('#charts').clientWidth - 18);

/** Which charts, which lines: by the series' kind from the API (KIND_CHARTS); kind "other" by name shape. */
function chartSpecs() {
  const v = state.view;
  const run = state.run.id;
  const present = state.series.filter((s) => s.count > 0);
  const named = new Set(Array.from(state.findings.values()).map((f) => f.series));
  const specs = [];
  for (const g of KIND_CHARTS) {
    let list = present.filter((s) => g.kinds.includes(s.kind));
    if (g.key === 'grad') {
      const layers = list.filter((s) => s.kind === 'param_grad_norm').sort((a, b) => (toNumber(b.max) || 0) - (toNumber(a.max) || 0));
      const keep = new Set(layers.slice(0, v.k).map((s) => s.name));
      for (const s of layers) if (named.has(s.name)) keep.add(s.name);  // a layer a finding names is always drawn
      list = list.filter((s) => s.kind !== 'param_grad_norm' || keep.has(s.name));
    }
    if (!list.length) continue;
    const spec = { key: g.key, title: g.title, lines: [] };
    if (g.key === 'grad') spec.title = 'Gradient norm (total, top-' + v.k + ' layers and layers with findings)';
    // Colours over every series of the group, drawn or not: a name keeps its colour when the
    // top-k changes, and across runs of the same model.
    const colors = assignColors(present.filter((s) => g.kinds.includes(s.kind)).map((s) => s.name));
    spec.lines = list.map((s) => ({ run, name: s.name, kind: s.kind, label: s.name, color: colors.get(s.name), width: s.name.includes('/') ? 1 : 1.75, scale: 'y' }));
    if (g.key === 'loss') taskMode(spec, list);
    specs.push(spec);
  }
  const other = new Map();
  for (const s of present) {
    if (KIND_CHARTS.some((g) => g.kinds.includes(s.kind))) continue;
    const shape = otherShape(s.name);
    if (!other.has(shape)) other.set(shape, []);
    other.get(shape).push(s);
  }
  for (const [shape, list] of other) {
    const colors = assignColors(list.map((s) => s.name));
    specs.push({ key: 'other:' + shape, title: shape === list[0].name ? shape : shape + ' (' + list.length + ' series)',
      lines: list.map((s) => ({ run, name: s.name, kind: s.kind, label: s.name, color: colors.get(s.name), width: 1.5, scale: 'y' })) });
  }
  // Compared runs: one chart per compared series, one line per run.
  if (v.cmp.length) {
    const runs = [run, ...v.cmp.filter((id) => id !== run)];
    const cmp = [];
    for (const name of v.cs) {
      cmp.push({ key: 'cmp:' + name, title: 'Compare: ' + name, compare: true,
        lines: runs.filter((r) => (r === run ? state.seriesByName : state.seriesOf.get(r))?.has(name))
          .map((r, i) => ({ run: r, name, label: '#' + r + ' ' + (state.runsById.get(r)?.name || ''), color: PALETTE[i % PALETTE.length], width: i === 0 ? 2 : 1.6, dash: i >= PALETTE.length ? [6, 4] : undefined, scale: 'y' })) });
    }
    specs.unshift(...cmp);
  }
  return specs;
}

/** Task losses: one axis, their own axes, or each divided by its initial value. */
function taskMode(spec, list) {
  const tasks = list.filter((s) => s.kind === 'task_loss');
  let mode = state.view.tasks;
  if (mode === 'auto') {
    // Own axes when the magnitudes differ by more than 20x (2.3 next to 15,000 reads as a flat line).
    const mags = list.map((s) => Math.abs(toNumber(s.last_value))).filter((x) => x > 0 && Number.isFinite(x));
    mode = tasks.length >= 1 && mags.length >= 2 && Math.max(...mags) / Math.min(...mags) > 20 ? 'axes' : 'shared';
  }
  spec.taskMode = mode;
  if (mode === 'axes') {
    let n = 0;
    for (const l of spec.lines) if (l.kind === 'task_loss') l.scale = 'y' + (++n);
    spec.note = 'each task loss on its own axis (right, in its colour)';
  } else if (mode === 'norm') {
    spec.normalise = true;
    spec.note = 'each line ÷ its initial value';
    spec.title = 'Loss relative to its start (total and per task)';
  }
}

function destroyCharts() {
  for (const c of state.charts) { observer.unobserve(c.box); c.destroy(); }
  visible.clear();
  stale.clear();
  state.charts = [];
  if (state.lanes) { state.lanes.destroy(); state.lanes = null; }
  $('#charts').replaceChildren();
  $('#lanes-wrap').replaceChildren();
}

const specSig = (s) => JSON.stringify([s.key, s.title, s.note, s.normalise, s.lines.map((l) => [l.run, l.name, l.color, l.scale, l.label])]);

/** Makes the charts match chartSpecs(): unchanged ones are kept (with their data and state). */
function buildCharts() {
  if (!state.run) return;
  const specs = chartSpecs();
  const keep = new Map(state.charts.map((c) => [specSig(c.spec), c]));
  const next = [];
  for (const spec of specs) {
    const sig = specSig(spec);
    let c = keep.get(sig);
    if (c) keep.delete(sig);
    else c = new Chart(spec, chartContext);
    next.push(c);
  }
  for (const c of keep.values()) { observer.unobserve(c.box); visible.delete(c.box); stale.delete(c); c.destroy(); }
  for (const c of next) if (!keep.has(specSig(c.spec)) && !c.observed) { c.observed = true; observe(c.box); }
  state.charts = next;
  $('#charts').replaceChildren(...next.map((c) => c.box));
  if (!state.lanes) {
    state.lanes = new Lanes(chartContext);
    $('#lanes-wrap').replaceChildren(state.lanes.box);
    observe(state.lanes.box);
  }
  // Loss first: the first chart on the screen should not wait for the others' requests.
  const pairs = next.flatMap((c) => c.lines.map((l) => [l.run, l.name]));
  for (const [r, n] of pairs) ensureFull(r, n);
  if (state.view.from != null) for (const [r, n] of pairs) ensureWindow(r, n, state.view.from, state.view.to);
  markAll();
}

function chartOf(name) { return state.charts.find((c) => !c.spec.compare && c.lines.some((l) => l.name === name)); }

/** Compared runs: their series lists (for the series menu) and subscriptions. */
async function loadCompared() {
  const gen = state.generation;
  for (const id of state.view.cmp) {
    if (state.seriesOf.has(id) || !state.run || id === state.run.id) continue;
    try {
      const r = await api('/api/runs/' + id + '/series');
      if (gen !== state.generation) return;
      setSeries(id, r.series);
      if (!state.subscribed.has(id)) subscribe(id);
    } catch (e) { setSeries(id, []); }
  }
  if (gen === state.generation) { renderCompareMenus(); buildCharts(); }
}

function renderCompareMenus() {
  if (!state.run) return;
  const v = state.view;
  const q = ($('#cmp-run-search').value || '').toLowerCase();
  const others = state.runs.filter((r) => r.id !== state.run.id).slice().reverse();
  $('#cmp-runs').replaceChildren(...others.filter((r) => !q || ('#' + r.id + ' ' + r.name).toLowerCase().includes(q)).map((r) =>
    el('label', { 'data-run-id': r.id }, el('input', { type: 'checkbox', checked: v.cmp.includes(r.id),
      onchange: (ev) => setView({ cmp: ev.target.checked ? v.cmp.concat([r.id]) : v.cmp.filter((x) => x !== r.id) }) }),
    '#' + r.id + ' ' + r.name, el('span', { class: 'muted' }, ' ' + r.status))));
  $('#cmp-runs-summary').textContent = v.cmp.length ? v.cmp.map((id) => '#' + id).join(', ') : 'no other run';
  const names = new Set(state.series.map((s) => s.name));
  for (const id of v.cmp) for (const n of (state.seriesOf.get(id) || new Map()).keys()) names.add(n);
  const sorted = Array.from(names).sort((a, b) => (a.includes('/') - b.includes('/')) || (a < b ? -1 : 1));
  $('#cmp-series').replaceChildren(...sorted.map((n) => el('label', {}, el('input', { type: 'checkbox', value: n, checked: v.cs.includes(n),
    onchange: (ev) => setView({ cs: ev.target.checked ? v.cs.concat([n]) : v.cs.filter((x) => x !== n) }) }), n)));
  $('#cmp-series-summary').textContent = v.cs.join(', ') || 'none';
}

// ---------------------------------------------------------------- what the charts ask the app

const chartContext = {
  view: () => state.view,
  width: plotWidth,
  xRange(chart) {
    const v = state.view;
    if (v.from != null) return [v.from, v.to];
    let lo = state.firstStep, hi = state.lastStep;
    if (chart && chart.spec.compare) {
      for (const t of chart.tracks) if (t && t.pts.length) { lo = Math.min(lo, t.firstStep); hi = Math.max(hi, t.lastStep); }
    }
    return [lo, Math.max(hi, lo + 1)];
  },
  timeMap: () => runTimeMap(),
  toggle(which, key) {
    const list = state.view[which];
    setView({ [which]: list.includes(key) ? list.filter((k) => k !== key) : list.concat([key]) });
  },
  setZoom: (from, to) => setView({ from, to }),
  clearZoom: () => setView({ from: null, to: null }),
  selectFinding: (id, zoom) => selectFinding(id, zoom),
  selectedFinding: () => (state.selected != null ? state.findings.get(state.selected) : null),
  selectedSeries: () => (state.selected != null ? state.findings.get(state.selected)?.series : null),
  findingsOn: (name) => findingsBySeries().get(name) || [],
  visibleFindings: () => visibleFindings(state.view),
  finding: (id) => state.findings.get(id),
  hover: (step) => { for (const c of state.charts) c.hoverAt(step); },
  drawn: (chart) => notePaint(chart),
};

let findingsVersion = 0;  // bumps when a finding is added or changed

// Findings by the series they name (only those passing the filter); rebuilt when findings or
// the filter change.
let bySeries = null, bySeriesSig = '';
function findingsBySeries() {
  const sig = state.findings.size + '|' + findingsVersion + '|' + JSON.stringify([state.view.sev, state.view.hide, state.view.fq]);
  if (bySeries && sig === bySeriesSig) return bySeries;
  bySeries = new Map();
  for (const f of state.findings.values()) {
    if (!passes(f, state.view)) continue;
    if (!bySeries.has(f.series)) bySeries.set(f.series, []);
    bySeries.get(f.series).push(f);
  }
  bySeriesSig = sig;
  return bySeries;
}

// Step -> time of the shown run, from the wall times of its loss (or first) series.
let timeMapCache = null;
function runTimeMap() {
  if (!state.run) return null;
  const name = state.seriesByName.has('loss') ? 'loss' : state.series[0]?.name;
  const t = name ? trackFor(state.run.id, name) : null;
  const full = name ? state.store.get(state.run.id)?.get(name)?.full : null;
  const src = full || t;
  if (!src) return null;
  if (timeMapCache && timeMapCache.src === src && timeMapCache.n === src.pts.length) return timeMapCache.map;
  let last = -Infinity;
  const pairs = [];
  for (const p of src.pts) if (Number.isFinite(p[2]) && p[2] >= last) { pairs.push([p[0], p[2]]); last = p[2]; }
  timeMapCache = { src, n: src.pts.length, map: new TimeMap(pairs) };
  return timeMapCache.map;
}

// ---------------------------------------------------------------- frames

// What the next frames redraw. `urgent`: the user asked (zoom, toggle) or data arrived for a
// chart that waits for it; other live updates of the charts below the first are spaced so the
// live edge moves about one pixel per redraw (at least 100 ms, at most 1 s apart): a 200k-step
// run streaming 500 steps/s redraws them ~3 times a second, a short run 10 times.
const dirty = { charts: new Set(), urgent: new Set(), all: false, lanes: false };
let frameQueued = false, timerQueued = null;
function schedule() {
  if (frameQueued) return;
  frameQueued = true;
  requestAnimationFrame(frame);
}
function markAll() {
  for (const c of state.charts) { dirty.charts.add(c); dirty.urgent.add(c); }
  dirty.lanes = true;
  schedule();
}
function markUrgent(c) { dirty.charts.add(c); dirty.urgent.add(c); }

const live = { rate: 0, at: 0, step: 0 };  // steps per second of the shown run, smoothed
function liveInterval(c) {
  if (!(live.rate > 0)) return 100;
  const stepsPerPx = (c.xr[1] - c.xr[0]) / Math.max(100, c.width() - 140);
  return Math.min(1000, Math.max(100, 1000 * stepsPerPx / live.rate));
}

function frame() {
  frameQueued = false;
  if (dirty.all) { for (const c of state.charts) dirty.charts.add(c); dirty.all = false; }
  const perf = state.perf;
  const now = performance.now();
  let wait = Infinity, drew = false;
  // One chart per frame: each frame's drawing stays short, so the page keeps its frame rate
  // while every chart has something new. Of the charts due, the one drawn longest ago goes
  // first (page order on a tie), so a chart that changes every frame cannot starve the others.
  let next = null, due = 0;
  for (const c of state.charts) {
    if (!dirty.charts.has(c)) continue;
    // Charts off the screen wait until they are scrolled to (visibility observer below).
    if (!visible.has(c.box)) { dirty.charts.delete(c); dirty.urgent.delete(c); stale.add(c); continue; }
    if (!dirty.urgent.has(c) && c !== state.charts[0] && c.lastDraw) {
      const left = c.lastDraw + liveInterval(c) - now;
      if (left > 0) { wait = Math.min(wait, left); continue; }
    }
    due++;
    if (!next || (c.lastDraw || 0) < (next.lastDraw || 0)) next = c;
  }
  if (next) {
    dirty.charts.delete(next);
    dirty.urgent.delete(next);
    const t0 = performance.now();
    next.update();
    next.lastDraw = t0;
    perf.chartMs = (perf.chartMs || 0) + (performance.now() - t0);
    perf.chartUpdates = (perf.chartUpdates || 0) + 1;
    drew = true;
    if (due > 1) wait = 0;
  }
  for (const c of dirty.charts) if (!state.charts.includes(c)) { dirty.charts.delete(c); dirty.urgent.delete(c); }
  if (dirty.lanes && state.lanes && !visible.has(state.lanes.box)) { dirty.lanes = false; staleLanes = true; }
  if (dirty.lanes && state.lanes && !drew) {
    const left = (state.lanes.lastDraw || 0) + (live.rate > 0 ? 500 : 0) - now;
    if (left > 0) wait = Math.min(wait, left);
    else {
      const t0 = performance.now();
      dirty.lanes = false;
      state.lanes.update();
      state.lanes.lastDraw = t0;
      perf.lanesMs = (perf.lanesMs || 0) + performance.now() - t0;
    }
  } else if (dirty.lanes) wait = Math.min(wait, 0);
  if (wait === 0) schedule();
  else if (wait < Infinity && !timerQueued) timerQueued = setTimeout(() => { timerQueued = null; schedule(); }, wait);
  if (state.perf.firstChart == null && state.charts.some((c) => Number(c.box.dataset.points) > 0)) {
    state.perf.firstChart = performance.now();
    document.body.dataset.firstChartMs = String(Math.round(state.perf.firstChart));
  }
}

// Which charts are on the screen: live updates redraw only those; the others catch up when
// they are scrolled into view.
const visible = new Set();
const stale = new Set();
let staleLanes = false;
const observer = new IntersectionObserver((entries) => {
  for (const e of entries) {
    if (e.isIntersecting) visible.add(e.target); else visible.delete(e.target);
    if (!e.isIntersecting) continue;
    for (const c of stale) if (c.box === e.target) { stale.delete(c); markUrgent(c); }
    if (state.lanes && e.target === state.lanes.box && staleLanes) { staleLanes = false; dirty.lanes = true; }
  }
  schedule();
}, { rootMargin: '200px 0px' });
function observe(box) { visible.add(box); observer.observe(box); }  // visible until told otherwise

// Commit-to-pixel: the largest loss step drawn, stamped at the frame after it was drawn.
let paintedStep = -1;
function notePaint(chart) {
  if (!state.run || chart.key !== 'loss') return;
  const t = chart.tracks[0];
  if (!t || t.lastStep <= paintedStep || chart.xr[1] < t.lastStep) return;
  paintedStep = t.lastStep;
  const step = paintedStep;
  requestAnimationFrame(() => {
    const p = state.perf.paints;
    p.push([step, performance.timeOrigin + performance.now()]);
    if (p.length > 20000) p.splice(0, 10000);
  });
}

onData((run) => {
  for (const c of state.charts) if (c.lines.some((l) => l.run === run)) markUrgent(c);
  dirty.lanes = true;
  schedule();
});

// ---------------------------------------------------------------- live deltas

let seriesRefresh = null;
function onDelta(m) {
  const t0 = performance.now();
  try { onDeltaInner(m); } finally { state.perf.deltaMs = (state.perf.deltaMs || 0) + performance.now() - t0; state.perf.deltas = (state.perf.deltas || 0) + 1; }
}
function onDeltaInner(m) {
  const current = state.run && m.run === state.run.id;
  if (!state.run || !(current || state.view.cmp.includes(m.run))) return;
  if (current && m.status && m.status !== state.run.status) { state.run.status = m.status; renderRunHead(); }
  let grew = false, unknown = false;
  for (const [name, pts] of Object.entries(m.points || {})) {
    if (!pts.length) continue;
    if (current) {
      if (!state.seriesByName.has(name) || !state.seriesByName.get(name).count) unknown = true;
      const last = pts[pts.length - 1][0];
      if (last > state.lastStep) {
        const now = performance.now();
        if (live.at && now > live.at) live.rate = 0.8 * live.rate + 0.2 * ((last - live.step) * 1000 / (now - live.at));
        live.at = now;
        live.step = last;
        state.lastStep = last;
        grew = true;
      }
    }
    // A chart zoomed to earlier steps does not change when points arrive after its window.
    const inView = state.view.from == null || pts[0][0] <= state.view.to;
    if (appendDelta(m.run, name, pts) && inView) for (const c of state.charts) if (c.lines.some((l) => l.run === m.run && l.name === name)) dirty.charts.add(c);
  }
  if (current && m.findings && m.findings.length) addFindings(m.findings);
  if (current && m.events && m.events.length) {
    for (const e of m.events) state.events.set(e.id, e);
    renderEvents();
    renderDropWarning();
  }
  if (grew && state.view.from == null) { dirty.all = true; dirty.lanes = true; }
  if (unknown && !seriesRefresh) {  // a series got its first points: its chart may be new
    seriesRefresh = setTimeout(async () => {
      seriesRefresh = null;
      if (!state.run) return;
      const gen = state.generation;
      try {
        const r = await api('/api/runs/' + state.run.id + '/series');
        if (gen !== state.generation) return;
        setSeries(state.run.id, r.series);
        buildCharts();
      } catch (e) { /* next delta tries again */ }
    }, 300);
  }
  schedule();
}

// ---------------------------------------------------------------- zoom and findings

function zoomChanged() {
  const v = state.view;
  dropWindows();
  if (v.from != null) for (const c of state.charts) for (const l of c.lines) ensureWindow(l.run, l.name, v.from, v.to);
  markAll();
}

/** Zoom margin around a finding: a quarter of its length on each side, at least 5 steps. */
const zoomMargin = (f) => Math.max(5, Math.ceil((f.last_step - f.first_step + 1) * 0.25));

function selectFinding(id, zoom) {
  const f = state.findings.get(id);
  if (!f) return;
  state.selected = id;
  state.lastSelected = id;  // where the arrow keys go on from, also after Esc
  const patch = { f: id };
  if (zoom) {
    const m = zoomMargin(f);
    patch.from = Math.max(state.firstStep, f.first_step - m);
    patch.to = Math.min(Math.max(state.lastStep, f.last_step), f.last_step + m);
  }
  if (state.view.f !== id || zoom) setView(patch);
  showFinding(f, { onClose: () => clearSelection(true), onZoom: () => selectFinding(id, true) });
  markSelected(id);
  for (const c of state.charts) c.restyle();
  dirty.lanes = true;
  schedule();
}

function clearSelection(updateUrl) {
  state.selected = null;
  $('#finding-detail').hidden = true;
  markSelected(null);
  if (updateUrl && state.view.f != null) setView({ f: null });
  for (const c of state.charts) c.restyle();
  dirty.lanes = true;
  schedule();
}

function stepFinding(dir) {
  const list = visibleFindings(state.view);
  if (!list.length) return;
  let i = list.findIndex((f) => f.id === (state.selected ?? state.lastSelected));
  i = i < 0 ? (dir > 0 ? 0 : list.length - 1) : Math.min(list.length - 1, Math.max(0, i + dir));
  selectFinding(list[i].id, true);
}

// ---------------------------------------------------------------- download

/** The data of the charts as shown: every visible line, the points in the x-range. */
function viewData() {
  const out = [];
  const seen = new Set();
  for (const c of state.charts) {
    const [x0, x1] = c.xr;
    c.lines.forEach((l, i) => {
      const key = l.run + '\n' + l.name;
      const t = c.tracks[i];
      if (c.hidden.has(i) || !t || seen.has(key)) return;
      seen.add(key);
      const sm = c.smoothed[i];
      const pts = [];
      t.pts.forEach((p, j) => { if (p[0] >= x0 && p[0] <= x1) pts.push(sm ? [p[0], p[1], p[2], sm[j]] : p); });
      out.push({ run_id: l.run, run_name: state.runsById.get(l.run)?.name || (l.run === state.run.id ? state.run.name : ''),
        series: l.name, kind: state.seriesOf.get(l.run)?.get(l.name)?.kind || '', bucket_width: t.bw, exact: t.bw === 1, points: pts });
    });
  }
  return out;
}

function download(kind) {
  if (!state.run) return;
  const data = viewData();
  const x = state.charts[0] ? state.charts[0].xr : [0, 0];
  const sm = state.view.sm > 0;
  let text, type;
  if (kind === 'csv') {
    const header = ['run_id', 'run_name', 'series', 'kind', 'step', 'wall_time', 'value'].concat(sm ? ['smoothed'] : []);
    const rows = [];
    for (const s of data) for (const p of s.points) rows.push([s.run_id, s.run_name, s.series, s.kind, p[0], p[2], p[1]].concat(sm ? [p[3]] : []));
    text = toCsv(header, rows);
    type = 'text/csv';
  } else {
    const num = (v) => (typeof v === 'number' && !Number.isFinite(v) ? fmt(v) : v);
    text = JSON.stringify({ exported_at: new Date().toISOString(), url: location.href, view: state.view, steps: x,
      smoothing: state.view.sm, series: data.map((s) => ({ ...s, points: s.points.map((p) => p.map(num)) })) }, null, 1);
    type = 'application/json';
  }
  const a = el('a', { href: URL.createObjectURL(new Blob([text], { type })), download: 'losslens-run' + state.run.id + '-steps' + x[0] + '-' + x[1] + '.' + kind });
  document.body.append(a);
  a.click();
  setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
}

// ---------------------------------------------------------------- theme and keys

function setTheme(t, save) {
  document.documentElement.dataset.theme = t;
  if (save) try { localStorage.setItem('losslens-theme', t); } catch (e) { /* storage off */ }
  $('#theme-toggle').textContent = t === 'dark' ? '☀' : '☾';
  for (const c of state.charts) c.structure = null;  // canvas colours come from the theme
  if (state.lanes) state.lanes.lanesBuilt = -1;
  markAll();
}

function onKey(ev) {
  const typing = ev.target.matches && ev.target.matches('input[type=search], input[type=text], input:not([type]), select, textarea');
  if (ev.key === 'Escape') {
    if (typing) { ev.target.blur(); return; }
    for (const d of document.querySelectorAll('details[open]')) d.open = false;
    if (!$('#finding-detail').hidden || state.selected != null) clearSelection(true);
    return;
  }
  if (typing || ev.ctrlKey || ev.metaKey || ev.altKey) return;
  if (ev.key === '/') {
    ev.preventDefault();
    (state.view.page === 'run' ? $('#finding-search') : $('#run-search')).focus();
  } else if ((ev.key === 'ArrowRight' || ev.key === 'ArrowDown' || ev.key === 'j') && state.run) {
    ev.preventDefault(); stepFinding(1);
  } else if ((ev.key === 'ArrowLeft' || ev.key === 'ArrowUp' || ev.key === 'k') && state.run) {
    ev.preventDefault(); stepFinding(-1);
  }
}

// ---------------------------------------------------------------- wiring

function wire() {
  buildSeverityFilter((sev, on) => setView({ sev: on ? state.view.sev.concat([sev]) : state.view.sev.filter((s) => s !== sev) }));
  onKindToggle((k) => setView({ hide: state.view.hide.includes(k) ? state.view.hide.filter((x) => x !== k) : state.view.hide.concat([k]) }));
  let smTimer = null;
  $('#smoothing').addEventListener('input', (ev) => {
    $('#smoothing-value').textContent = Number(ev.target.value).toFixed(2);
    clearTimeout(smTimer);
    smTimer = setTimeout(() => setView({ sm: Number(ev.target.value) }), 60);
  });
  $('#x-mode').addEventListener('change', (ev) => setView({ x: ev.target.value }));
  $('#tasks-mode').addEventListener('change', (ev) => setView({ tasks: ev.target.value }));
  $('#top-k').addEventListener('change', (ev) => setView({ k: Number(ev.target.value) }));
  $('#lanes-by').addEventListener('change', (ev) => setView({ lanes: ev.target.value }));
  $('#reset-zoom').addEventListener('click', () => setView({ from: null, to: null }));
  $('#download-csv').addEventListener('click', () => download('csv'));
  $('#download-json').addEventListener('click', () => download('json'));
  $('#copy-link').addEventListener('click', async (ev) => {
    try { await navigator.clipboard.writeText(location.href); ev.target.textContent = 'copied'; } catch (e) { prompt('Link to this view:', location.href); }
    setTimeout(() => { ev.target.textContent = 'copy link'; }, 1500);
  });
  // Search fields: typing (debounced), and clearing by Esc or the field's × ("search" event).
  const searchField = (sel, key, ms) => {
    let timer = null;
    const apply = (ev) => { clearTimeout(timer); timer = setTimeout(() => setView({ [key]: ev.target.value }), ms); };
    $(sel).addEventListener('input', apply);
    $(sel).addEventListener('search', apply);
  };
  searchField('#finding-search', 'fq', 150);
  searchField('#run-search', 'q', 100);
  $('#cmp-run-search').addEventListener('input', renderCompareMenus);
  $('#theme-toggle').addEventListener('click', () => setTheme(document.documentElement.dataset.theme === 'dark' ? 'light' : 'dark', true));
  matchMedia('(prefers-color-scheme: dark)').addEventListener('change', (e) => {
    let saved = null;
    try { saved = localStorage.getItem('losslens-theme'); } catch (err) { /* storage off */ }
    if (!saved) setTheme(e.matches ? 'dark' : 'light', false);
  });
  document.addEventListener('keydown', onKey);
  let resizeTimer = null;
  window.addEventListener('resize', () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => { for (const c of state.charts) c.resize(); if (state.lanes) state.lanes.resize(); }, 150);
  });
  window.addEventListener('hashchange', () => applyView(parseHash(location.hash)));
}

wire();
setTheme(document.documentElement.dataset.theme || 'light', false);
applyView(parseHash(location.hash));
refreshRuns();
connect();
