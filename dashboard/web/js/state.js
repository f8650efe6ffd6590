// The page's state (one object, shared by the modules) and small DOM helpers.
import { defaultView } from './util.js';

export const state = {
  view: defaultView(),       // what the URL holds (util.js parseHash / viewHash)
  runs: [],                  // /api/runs, oldest first
  runsById: new Map(),
  run: null,                 // the shown run (/api/runs/{id}), null on the run list
  series: [],                // its /api/runs/{id}/series
  seriesByName: new Map(),
  seriesOf: new Map(),       // run id -> Map(name -> series info), for compared runs too
  store: new Map(),          // run id -> Map(series name -> entry, see data.js)
  ack: new Map(),            // run id -> last_steps of its `subscribed` acknowledgement
  findings: new Map(),       // id -> finding (an incident: episodes, spans, cause)
  events: new Map(),         // id -> event
  charts: [],                // Chart objects (charts.js), page order
  lanes: null,               // the findings lanes (lanes.js)
  selected: null,            // id of the finding zoomed to
  generation: 0,             // bumps when the shown run changes; stale answers are dropped
  ws: null, wsOpen: false,
  subscribed: new Set(),     // run ids acknowledged on the websocket
  firstStep: 0, lastStep: 0, // of the shown run
  perf: { start: 0, firstChart: null, paints: [] },
};

export const $ = (sel) => document.querySelector(sel);
export const $$ = (sel) => Array.from(document.querySelectorAll(sel));

/** document.createElement with attributes (on* = listeners) and children (nodes or text). */
export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'style') e.style.cssText = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) if (c != null) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

/** The page's token (?token=), passed on to every request. */
export const token = new URLSearchParams(location.search).get('token') || '';

export function apiUrl(path, params = {}) {
  const q = new URLSearchParams(params);
  if (token) q.set('token', token);
  const s = q.toString();
  return path + (s ? '?' + s : '');
}

/** GET an API path; throws an Error with the server's message (and .status) on 4xx/5xx. */
export async function api(path, params) {
  const res = await fetch(apiUrl(path, params));
  let body = null;
  try { body = await res.json(); } catch (e) { /* not JSON */ }
  if (!res.ok) {
    const err = new Error((body && body.error) || res.statusText);
    err.status = res.status;
    throw err;
  }
  return body;
}

/** The theme's colours for canvas drawing (CSS variables of the current theme). */
export function themeColors() {
  const cs = getComputedStyle(document.documentElement);
  const v = (n) => cs.getPropertyValue(n).trim();
  return { fg: v('--fg'), muted: v('--muted'), grid: v('--grid'), bg: v('--card'), line: v('--line') };
}
