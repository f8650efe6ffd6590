// The run list: search, sort by any column, config keys as extra columns, and a selection of
// runs to compare (opens the first with the others overlaid).
import { state, $, el } from './state.js';
import { fmtDuration, toNumber, SEVERITY_RANK } from './util.js';

const selected = new Set();  // run ids ticked for comparison

/** Top-level config keys (one level of nesting as a.b) with a scalar value, over all runs. */
export function configKeys(runs) {
  const keys = new Set();
  for (const r of runs) for (const k of Object.keys(flatConfig(r.config))) keys.add(k);
  return Array.from(keys).sort();
}
function flatConfig(c) {
  const out = {};
  if (!c || typeof c !== 'object') return out;
  for (const [k, v] of Object.entries(c)) {
    if (v && typeof v === 'object' && !Array.isArray(v)) {
      for (const [k2, v2] of Object.entries(v)) if (v2 === null || typeof v2 !== 'object') out[k + '.' + k2] = v2;
    } else if (!Array.isArray(v)) out[k] = v;
  }
  return out;
}

const COLUMNS = [
  { key: 'id', label: 'id', get: (r) => r.id, num: true },
  { key: 'name', label: 'name', get: (r) => r.name },
  { key: 'status', label: 'status', get: (r) => r.status },
  { key: 'started', label: 'started', get: (r) => toNumber(r.started_at), num: true },
  { key: 'duration', label: 'duration', get: (r) => toNumber(r.duration), num: true },
  { key: 'steps', label: 'steps', get: (r) => r.steps, num: true },
  { key: 'worst', label: 'worst finding', get: (r) => (r.worst_severity ? SEVERITY_RANK[r.worst_severity] * 1e6 + (r.findings || 0) : -1), num: true, left: true },
  { key: 'incidents', label: 'incidents', get: (r) => r.findings || 0, num: true },
];

function cell(col, r) {
  if (col.key === 'status') {
    return el('td', {}, el('span', { class: 'badge ' + r.status }, r.status),
      r.dropped > 0 ? el('span', { class: 'badge drops', title: 'the monitor or the writer dropped data (queue full)' }, 'drops') : null);
  }
  if (col.key === 'started') {
    const t = toNumber(r.started_at);
    return el('td', { class: 'num', title: Number.isFinite(t) ? new Date(t * 1000).toString() : '' }, Number.isFinite(t) ? new Date(t * 1000).toLocaleString() : '-');
  }
  if (col.key === 'duration') return el('td', { class: 'num' }, fmtDuration(toNumber(r.duration)));
  if (col.key === 'steps') return el('td', { class: 'num' }, (r.steps || 0).toLocaleString('en-US'));
  if (col.key === 'worst') {
    return el('td', { class: r.worst_severity ? 'sev-' + r.worst_severity : 'muted' },
      r.worst_finding ? r.worst_severity + ': ' + r.worst_finding.kind : '-');
  }
  if (col.key.startsWith('cfg:')) {
    const v = flatConfig(r.config)[col.key.slice(4)];
    return el('td', { class: 'mono' }, v === undefined ? '' : String(v));
  }
  return el('td', { class: col.num ? 'num' : '' }, String(col.get(r) ?? ''));
}

/** Draws the list for the view's search (q), sort and config columns. */
export function renderRuns(view, setView) {
  const cfg = view.cols.map((k) => ({ key: 'cfg:' + k, label: k, get: (r) => flatConfig(r.config)[k], cfg: true }));
  const cols = COLUMNS.concat(cfg);
  const desc = view.sort.startsWith('-');
  const sortKey = view.sort.replace(/^-/, '');
  const sortCol = cols.find((c) => c.key === sortKey) || COLUMNS[0];
  const q = view.q.trim().toLowerCase();
  let list = state.runs.filter((r) => !q || [r.id, r.name, r.status, r.host, r.worst_finding && r.worst_finding.kind, JSON.stringify(r.config)]
    .some((x) => x != null && String(x).toLowerCase().includes(q)));
  list = list.slice().sort((a, b) => {
    const x = sortCol.get(a), y = sortCol.get(b);
    const c = (x == null) - (y == null) || (typeof x === 'number' && typeof y === 'number' ? x - y : String(x).localeCompare(String(y), undefined, { numeric: true }));
    return (desc ? -c : c) || b.id - a.id;
  });
  const head = el('tr', {}, el('th', { class: 'pick' }, ''), ...cols.map((c) => el('th', {
    'data-col': c.key, class: (c.num && !c.left ? 'num ' : '') + 'sortable' + (c.key === sortKey ? ' sorted' : ''),
    title: 'sort by ' + c.label, onclick: () => setView({ sort: (c.key === sortKey && !desc ? '-' : '') + c.key }),
  }, c.label, c.key === sortKey ? (desc ? ' ▼' : ' ▲') : '')));
  $('#runs thead').replaceChildren(head);
  $('#runs tbody').replaceChildren(...list.map((r) => el('tr', { 'data-run-id': r.id },
    el('td', { class: 'pick' }, el('input', { type: 'checkbox', title: 'select to compare', checked: selected.has(r.id),
      onclick: (ev) => ev.stopPropagation(), onchange: (ev) => { if (ev.target.checked) selected.add(r.id); else selected.delete(r.id); updateCompareButton(); } })),
    ...cols.map((c) => cell(c, r)))));
  for (const tr of $('#runs tbody').children) {
    tr.addEventListener('click', () => { location.hash = '#/run/' + tr.dataset.runId; });
  }
  $('#runs-empty').hidden = state.runs.length > 0;
  $('#runs-count').textContent = list.length === state.runs.length ? '(' + list.length + ')' : '(' + list.length + ' of ' + state.runs.length + ')';
  if (document.activeElement !== $('#run-search')) $('#run-search').value = view.q;
  // Config columns: every key seen in a run's config, ticked when shown.
  const keys = configKeys(state.runs);
  const menu = $('#cols-menu');
  const sig = JSON.stringify([keys, view.cols]);
  if (menu.dataset.sig !== sig) {
    menu.dataset.sig = sig;
    menu.replaceChildren(...(keys.length ? keys.map((k) => el('label', {}, el('input', { type: 'checkbox', value: k, checked: view.cols.includes(k),
      onchange: (ev) => setView({ cols: ev.target.checked ? view.cols.concat([k]) : view.cols.filter((x) => x !== k) }) }), k))
      : [el('span', { class: 'muted' }, 'no config keys in these runs')]));
  }
  updateCompareButton();
}

function updateCompareButton() {
  const b = $('#compare-selected');
  const ids = Array.from(selected).filter((id) => state.runsById.has(id)).sort((a, b2) => a - b2);
  b.disabled = ids.length < 2;
  b.textContent = ids.length >= 2 ? 'compare ' + ids.length + ' runs' : 'compare (select 2+)';
  b.onclick = () => {
    if (ids.length < 2) return;
    location.hash = '#/run/' + ids[0] + '?cmp=' + ids.slice(1).join(',');
  };
}
