// Points of every (run, series) shown: the whole run downsampled (`full`, grown live by the
// websocket deltas) and the zoomed window (`win`, fetched at full resolution when it fits).
//
// Catching up without gaps (docs/dashboard.md): the page subscribes, and after the
// acknowledgement fetches what the deltas do not carry. Here per series: deltas that arrive
// while its first fetch or a catch-up fetch is under way wait in `pending` and are appended
// after it; a catch-up fetches (last step held, acknowledged step]. Points already held are
// ignored (Track.append keeps steps increasing), so overlaps are harmless.
import { state, api, $ } from './state.js';
import { Track, toNumber } from './util.js';

/** Points per series per chart: two per pixel of the plot (M4 buckets of about two pixels). */
export function budget() {
  const w = ($('#charts') && $('#charts').clientWidth) || 1200;
  return Math.max(600, Math.min(4000, Math.round(w * 2)));
}

let listener = () => {};
/** f(run, name) is called whenever a track of (run, name) changed. */
export function onData(f) { listener = f; }

function entry(run, name) {
  let m = state.store.get(run);
  if (!m) state.store.set(run, (m = new Map()));
  let e = m.get(name);
  if (!e) m.set(name, (e = { run, name, kind: null, full: null, loading: null, busy: 0, pending: [], win: null, winKey: null, error: null }));
  return e;
}

/** [[step, value, wall]] with "nan"/"inf"/"-inf" as numbers. */
export const parsePoints = (pts) => pts.map((p) => [p[0], toNumber(p[1]), p.length > 2 ? toNumber(p[2]) : NaN]);

/** Starts fetching the whole series (downsampled) unless it is held or on its way. */
export function ensureFull(run, name) {
  const e = entry(run, name);
  if (e.full || e.loading) return e;
  const b = budget();
  e.loading = api('/api/runs/' + run + '/points', { series: name, max_points: String(b) })
    .then((r) => {
      e.kind = r.kind;
      e.full = new Track(parsePoints(r.points), r.bucket_width, b);
      e.exact = r.exact;
    })
    .catch((err) => { e.error = err.message; e.full = new Track([], 1, b); })
    .finally(() => {
      e.loading = null;
      // The acknowledgement may be ahead of this answer: fetch the steps between first, then
      // the deltas that waited (catchUp appends them when it is done).
      catchUp(e);
      flushPending(e);
      listener(run, name);
    });
  return e;
}

function flushPending(e) {
  if (e.busy || !e.full || !e.pending.length) return;
  e.full.append(e.pending);
  e.pending = [];
}

/** Fetches (last held, acknowledged] of e when the acknowledgement is ahead of it. */
function catchUp(e) {
  const ack = state.ack.get(e.run);
  if (!ack || !e.full || e.busy) return;
  const to = ack[e.name];
  const from = e.full.lastStep + 1;
  if (to == null || to < from) return;
  e.busy++;
  api('/api/runs/' + e.run + '/points', { series: e.name, from: String(from), to: String(to), max_points: String(budget()) })
    .then((r) => { e.full.append(parsePoints(r.points)); })
    .catch(() => { /* the next acknowledgement (reconnect) tries again */ })
    .finally(() => {
      e.busy--;
      flushPending(e);
      listener(e.run, e.name);
    });
}

/** The websocket acknowledged run's subscription: from now on deltas carry the rest. */
export function acknowledged(run, lastSteps) {
  state.ack.set(run, lastSteps || {});
  const m = state.store.get(run);
  if (m) for (const e of m.values()) catchUp(e);
}

/** New points of a delta; true when a track that is drawn changed. */
export function appendDelta(run, name, raw) {
  const m = state.store.get(run);
  const e = m && m.get(name);
  if (!e || (!e.full && !e.loading)) return false;  // not shown: a later fetch gets them
  const pts = parsePoints(raw);
  if (!e.full || e.busy || e.loading) { for (const p of pts) e.pending.push(p); return false; }
  const added = e.full.append(pts);
  if (e.win && e.win.to >= pts[0][0]) e.win.append(pts.filter((p) => p[0] <= e.win.to));
  return added > 0;
}

/** Fetches the zoomed window [from, to] of (run, name) unless it is held. */
export function ensureWindow(run, name, from, to) {
  const e = entry(run, name);
  const key = from + '-' + to;
  if (e.winKey === key) return e;
  e.winKey = key;
  e.win = null;
  const b = budget();
  api('/api/runs/' + run + '/points', { series: name, from: String(from), to: String(to), max_points: String(b) })
    .then((r) => {
      if (e.winKey !== key) return;
      e.win = new Track(parsePoints(r.points), r.bucket_width, b * 2);
      e.win.to = to;
      e.win.exact = r.exact;
      listener(run, name);
    })
    .catch(() => { if (e.winKey === key) e.winKey = null; });
  return e;
}

export function dropWindows() {
  for (const m of state.store.values()) for (const e of m.values()) { e.win = null; e.winKey = null; }
}

/** The track drawn for (run, name): the zoomed window when it has arrived, else the whole run. */
export function trackFor(run, name) {
  const e = state.store.get(run)?.get(name);
  if (!e) return null;
  if (state.view.from != null && e.win) return e.win;
  return e.full;
}
