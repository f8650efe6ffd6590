// The findings table (one row per incident, updated row by row), its filter (severity, kind,
// text) and the finding popup (message, episodes, cause, evidence, advice).
import { state, $, el } from './state.js';
import { fmt } from './util.js';

const rows = new Map();  // finding id -> <tr>
let order = [];          // finding ids by first step (then id): the table's row order

const before = (a, b) => a.first_step < b.first_step || (a.first_step === b.first_step && a.id < b.id);

/** Does f pass the filter of the view (severity, hidden kinds, text)? */
export function passes(f, view) {
  if (!view.sev.includes(f.severity)) return false;
  if (view.hide.includes(f.kind)) return false;
  if (view.fq) {
    const q = view.fq.toLowerCase();
    if (!(f.kind + ' ' + f.series + ' ' + f.message).toLowerCase().includes(q)) return false;
  }
  return true;
}

/** The findings that pass the filter, in table order. */
export function visibleFindings(view) {
  const out = [];
  for (const id of order) { const f = state.findings.get(id); if (f && passes(f, view)) out.push(f); }
  return out;
}

export function resetFindings() {
  rows.clear();
  order = [];
  $('#findings tbody').replaceChildren();
  $('#finding-detail').hidden = true;
}

function rowFor(f, onPick) {
  const steps = f.first_step === f.last_step ? String(f.first_step) : f.first_step + '–' + f.last_step;
  const rank = f.evidence && f.evidence.rank !== undefined ? ' (rank ' + fmt(f.evidence.rank) + ')' : '';
  return el('tr', { 'data-finding-id': f.id, class: 'sev-row-' + f.severity, onclick: () => onPick(f.id) },
    el('td', { class: 'num' }, steps),
    el('td', {}, el('span', { class: 'sev sev-' + f.severity }, f.severity)),
    // Another sign of an incident listed near it (same state, same time): marked, not hidden.
    el('td', f.symptom_of_id ? { title: 'another sign of ' + f.symptom_of } : {},
      (f.symptom_of_id ? '↳ ' : '') + f.kind + rank),
    el('td', { class: 'num' }, f.episodes > 1 ? '×' + f.episodes : ''),
    el('td', { class: 'mono' }, f.series),
    el('td', {}, f.message));
}

/**
 * Adds or replaces the rows of these findings (new incidents, episodes that grew) without
 * touching the others.
 */
export function upsertFindings(list, view, onPick) {
  const tbody = $('#findings tbody');
  if (rows.size === 0 && list.length > 50) {  // first load: one fragment
    const sorted = list.slice().sort((a, b) => (a.first_step - b.first_step) || (a.id - b.id));
    const frag = document.createDocumentFragment();
    for (const f of sorted) {
      const tr = rowFor(f, onPick);
      tr.hidden = !passes(f, view);
      rows.set(f.id, tr);
      frag.append(tr);
    }
    order = sorted.map((f) => f.id);
    tbody.append(frag);
  } else {
    for (const f of list) {
      const old = rows.get(f.id);
      const tr = rowFor(f, onPick);
      tr.hidden = !passes(f, view);
      if (tr.hidden === false && state.selected === f.id) tr.classList.add('selected');
      if (old) {
        const i = order.indexOf(f.id);
        const prev = i > 0 ? state.findings.get(order[i - 1]) : null, next = i + 1 < order.length ? state.findings.get(order[i + 1]) : null;
        if ((!prev || before(prev, f)) && (!next || before(f, next))) { old.replaceWith(tr); rows.set(f.id, tr); continue; }
        order.splice(i, 1);
        old.remove();
      }
      // Binary search for the row it goes before.
      let lo = 0, hi = order.length;
      while (lo < hi) { const m = (lo + hi) >> 1; if (before(state.findings.get(order[m]), f)) lo = m + 1; else hi = m; }
      const at = order[lo];
      order.splice(lo, 0, f.id);
      rows.set(f.id, tr);
      if (at !== undefined) tbody.insertBefore(tr, rows.get(at)); else tbody.append(tr);
    }
  }
  updateCounts(view);
}

/** Applies a changed filter to every row. */
export function refilter(view) {
  for (const id of order) {
    const f = state.findings.get(id);
    rows.get(id).hidden = !passes(f, view);
  }
  updateCounts(view);
}

let filterBuilt = '';
function updateCounts(view) {
  const all = Array.from(state.findings.values());
  const shown = order.reduce((n, id) => n + (rows.get(id).hidden ? 0 : 1), 0);
  const text = '(' + (shown === all.length ? all.length : shown + ' of ' + all.length) + ' incidents, ' +
    all.reduce((n, f) => n + (f.episodes || 1), 0) + ' episodes)';
  if ($('#findings-count').textContent !== text) $('#findings-count').textContent = text;
  // Severity and kind chips with counts; rebuilt only when the set of kinds changes.
  const kinds = new Map();
  const sevs = { error: 0, warning: 0, info: 0 };
  for (const f of all) {
    kinds.set(f.kind, (kinds.get(f.kind) || 0) + 1);
    sevs[f.severity] = (sevs[f.severity] || 0) + 1;
  }
  const sig = JSON.stringify([Array.from(kinds.keys()).sort(), view.sev, view.hide]);
  for (const [s, n] of Object.entries(sevs)) {
    const c = document.querySelector('#sev-filter [data-sev="' + s + '"] .n');
    if (c && c.textContent !== String(n)) c.textContent = String(n);
  }
  if (sig === filterBuilt) {
    for (const [k, n] of kinds) {
      const c = document.querySelector('#kind-filter [data-kind="' + CSS.escape(k) + '"] .n');
      if (c && c.textContent !== String(n)) c.textContent = String(n);
    }
    return;
  }
  filterBuilt = sig;
  $('#kind-filter').replaceChildren(...Array.from(kinds.entries()).sort((a, b) => (a[0] < b[0] ? -1 : 1)).map(([k, n]) =>
    el('button', { type: 'button', class: 'chip' + (view.hide.includes(k) ? ' off' : ''), 'data-kind': k,
      title: 'show / hide ' + k, onclick: () => kindToggle(k) }, k, ' ', el('span', { class: 'n' }, n))));
}
let kindToggle = () => {};
export function onKindToggle(f) { kindToggle = f; }

/** Severity checkboxes (built once). */
export function buildSeverityFilter(onChange) {
  $('#sev-filter').replaceChildren(...['error', 'warning', 'info'].map((s) =>
    el('label', { class: 'chip sev-' + s, 'data-sev': s },
      el('input', { type: 'checkbox', checked: true, onchange: (ev) => onChange(s, ev.target.checked) }), s, ' ', el('span', { class: 'n' }, '0'))));
}
export function syncSeverityFilter(view) {
  for (const s of ['error', 'warning', 'info']) {
    const box = document.querySelector('#sev-filter [data-sev="' + s + '"] input');
    if (box) box.checked = view.sev.includes(s);
  }
  filterBuilt = '';
}

/** Marks the selected row and scrolls it into the table's view (not the page's). */
export function markSelected(id) {
  for (const tr of document.querySelectorAll('#findings tr.selected')) tr.classList.remove('selected');
  const tr = rows.get(id);
  if (!tr) return;
  tr.classList.add('selected');
  const wrap = $('#findings-wrap');
  const top = tr.offsetTop - wrap.clientHeight / 3;
  if (tr.offsetTop < wrap.scrollTop || tr.offsetTop > wrap.scrollTop + wrap.clientHeight - 30) wrap.scrollTop = Math.max(0, top);
}

/** The popup with everything about one finding. */
export function showFinding(f, { onClose, onZoom }) {
  const d = $('#finding-detail');
  const rowsOf = (obj) => Object.entries(obj || {}).map(([k, v]) => el('tr', {}, el('td', { class: 'muted' }, k), el('td', { class: 'num' }, fmt(v))));
  const spans = f.spans && f.spans.length > 1 ? f.spans : [];
  d.replaceChildren(...[
    el('button', { class: 'close', type: 'button', title: 'close (Esc)', onclick: onClose }, '×'),
    el('h4', { class: 'sev-' + f.severity }, f.severity + ': ' + f.kind),
    el('div', { class: 'muted' }, 'series ', el('b', { class: 'mono' }, f.series || '-'), ', steps ' + f.first_step + '–' + f.last_step +
      (f.episodes > 1 ? ', ' + f.episodes + ' episodes' : '') + (f.rule && f.rule.name ? ', rule ' + f.rule.name : '')),
    el('p', {}, f.message),
    f.cause ? el('p', { class: 'muted' }, 'preceded by: ' + f.cause) : null,
    f.symptom_of ? el('p', { class: 'muted' }, 'another sign of ' + f.symptom_of) : null,
    spans.length ? el('details', { class: 'episodes' }, el('summary', {}, 'episodes (' + spans.length + ')'),
      el('table', {}, el('tbody', {}, ...spans.slice(0, 200).map((s) => el('tr', {},
        el('td', { class: 'num' }, s.first_step + '–' + s.last_step), el('td', { class: 'sev-' + s.severity }, s.severity),
        el('td', { class: 'num' }, s.peak !== undefined ? 'peak ' + fmt(s.peak) : '')))))) : null,
    el('table', { class: 'evidence' }, el('tbody', {}, ...rowsOf(f.evidence))),
    el('div', { class: 'advice' }, f.advice),
    el('div', { class: 'popup-actions' },
      el('button', { type: 'button', onclick: onZoom }, 'zoom to it'),
      el('span', { class: 'muted' }, '← → previous / next finding, Esc closes')),
  ].filter(Boolean));
  d.hidden = false;
  d.dataset.findingId = String(f.id);
}
