// Browser test: real headless Chromium (Debian's /usr/bin/chromium driven by playwright-core)
// against the dashboard, at 1440x900, on
//   A. real runs written by the example trainers (fmnist_train healthy and --lr 5, three
//      fmnist_multitask runs) served by a `losslens serve` sidecar: run list, findings as
//      navigation, readable charts, comparison, the URL, downloads, keyboard, dark mode, the
//      error page;
//   B. a live run written by tests/browser/live_writer.cpp with the server embedded in the
//      writer: live updates, NaN markers, drops, offline banner and reconnect without gaps;
//   C. a live run of 200,000 steps and 1,000 findings: first-chart time, frames per second and
//      commit-to-pixel latency, measured and printed (with the load average), not asserted.
// Screenshots go to OUTPUT_DIR. Assertions check what a user sees: markers on a series, the
// zoom range after a click, tick labels, legends, rows.
//
// usage: node browser.test.js WRITER OUTPUT_DIR [--cli LOSSLENS] [--fmnist FMNIST_TRAIN]
//                                               [--multitask FMNIST_MULTITASK]
//                                               [--real-db DB]
// Without --cli/--fmnist/--multitask part A is skipped (said on stdout). --real-db reuses a
// database those five trainer runs were written to (faster while working on the page).
// Exit status: 0 pass, 1 fail, 77 skipped (no Chromium or playwright-core).
'use strict';
const { spawn, spawnSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const readline = require('readline');

const SKIP = 77;
const argv = process.argv.slice(2);
const opt = (name) => { const i = argv.indexOf(name); return i >= 0 ? argv[i + 1] : null; };
const [writerBin, outDir] = argv;
const cliBin = opt('--cli'), fmnistBin = opt('--fmnist'), multitaskBin = opt('--multitask'), realDb = opt('--real-db');
const chromiumPath = process.env.LOSSLENS_CHROMIUM || '/usr/bin/chromium';
if (!writerBin || !outDir) { console.error('usage: node browser.test.js WRITER OUTPUT_DIR [--cli L] [--fmnist F] [--multitask M]'); process.exit(2); }
if (!fs.existsSync(chromiumPath)) { console.log('SKIP: no Chromium at ' + chromiumPath); process.exit(SKIP); }
let chromium;
try { ({ chromium } = require('playwright-core')); } catch (e) {
  console.log('SKIP: playwright-core missing (npm ci --prefix dashboard/web)'); process.exit(SKIP);
}

const timer = setTimeout(() => { console.error('FAIL: timed out'); process.exit(1); }, 290000);
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'losslens-browser-'));
fs.mkdirSync(outDir, { recursive: true });
const children = [];
let browser = null;
const t0 = Date.now();
const load = () => os.loadavg()[0].toFixed(2);

function check(cond, what) {
  if (!cond) throw new Error(what);
  console.log('ok - ' + what);
}
const shot = (page, name, full = false) => page.screenshot({ path: path.join(outDir, name), fullPage: full });

async function newPage({ dark = false } = {}) {
  const context = await browser.newContext({ viewport: { width: 1440, height: 900 }, colorScheme: dark ? 'dark' : 'light', acceptDownloads: true });
  const page = await context.newPage();
  page.errors = [];
  page.on('pageerror', (e) => page.errors.push(String(e)));
  // Refused connections while a server restarts (on purpose, part B) are expected.
  page.on('console', (m) => { if (m.type() === 'error' && !/ERR_CONNECTION_REFUSED/.test(m.text())) page.errors.push(m.text()); });
  return page;
}
const data = (page, sel) => page.evaluate((s) => { const e = document.querySelector(s); return e ? { ...e.dataset } : null; }, sel);

/**
 * Waits until every chart shows the x-range of the URL (from/to), scrolling each into view
 * (charts off the screen are redrawn when they come into view), and returns [from, to].
 */
async function chartsZoomed(page) {
  const [from, to] = await page.evaluate(() => { const m = /from=(\d+)&to=(\d+)/.exec(location.hash); return m ? [Number(m[1]), Number(m[2])] : [NaN, NaN]; });
  for (const id of await page.$$eval('.chart[data-key]', (cs) => cs.map((c) => c.id))) {
    await page.$eval('#' + id, (e) => e.scrollIntoView({ block: 'center' }));
    await page.waitForFunction(([sel, a, b]) => { const d = document.querySelector(sel).dataset; return Number(d.xmin) === a && Number(d.xmax) === b; }, ['#' + id, from, to], { timeout: 10000 });
  }
  await page.evaluate(() => window.scrollTo(0, 0));
  return [from, to];
}
const num = (x) => Number(x);

/** The on-screen box of `sel`, read after the element is attached and laid out (a chart is
 *  rebuilt when its data or axes change, so a handle taken a moment earlier can be detached). */
async function plotBox(page, sel) {
  const h = await page.waitForFunction((q) => {
    const e = document.querySelector(q);
    const r = e && e.getBoundingClientRect();
    return r && r.width > 0 && r.height > 0 ? { x: r.x, y: r.y, width: r.width, height: r.height } : null;
  }, sel);
  return h.jsonValue();
}

/** Starts a child whose first stdout line (or, with `match`, the first matching line of stdout or stderr) is returned. */
async function start(bin, args, match) {
  const child = spawn(bin, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  children.push(child);
  child.stderr.on('data', (d) => { if (!match) process.stderr.write(d); });
  const lines = readline.createInterface({ input: child.stdout });
  const errLines = readline.createInterface({ input: child.stderr });
  const first = await new Promise((resolve, reject) => {
    const onLine = (l) => { if (!match || match.test(l)) resolve(l); };
    lines.on('line', onLine);
    if (match) errLines.on('line', onLine);
    child.once('exit', (code) => reject(new Error(path.basename(bin) + ' exited with ' + code)));
  });
  return { child, first, lines };
}

// ------------------------------------------------------------------ A. real runs

async function realRuns() {
  if (!cliBin || !fmnistBin || !multitaskBin) {
    console.log('note: part A (real runs) skipped: pass --cli, --fmnist and --multitask (built with LibTorch)');
    return;
  }
  const db = realDb || path.join(tmp, 'real.db');
  const g0 = Date.now();
  const trainers = [
    [fmnistBin, ['--steps', '300', '--limit', '6000']],
    [fmnistBin, ['--steps', '300', '--limit', '6000', '--lr', '5']],
    [multitaskBin, ['--steps', '300', '--limit', '6000', '--weighting', 'none']],
    [multitaskBin, ['--steps', '300', '--limit', '6000', '--weighting', 'fixed']],
    [multitaskBin, ['--steps', '300', '--limit', '6000', '--weighting', 'uncertainty']],
  ];
  for (const [bin, args] of realDb && fs.existsSync(realDb) ? [] : trainers) {
    const r = spawnSync(bin, args.concat(['--db', db]), { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(path.basename(bin) + ' ' + args.join(' ') + ' failed: ' + r.stderr);
  }
  console.log('note: 5 runs written by the example trainers in ' + ((Date.now() - g0) / 1000).toFixed(1) + ' s');
  const { first } = await start(cliBin, ['serve', '--db', db, '--port', '0'], /dashboard for .* at http/);
  const base = first.match(/http:\/\/[^/]+\//)[0];
  const runs = (await (await fetch(base + 'api/runs')).json()).runs;
  const byName = (n) => runs.find((r) => r.name === n);
  const healthy = byName('fmnist-healthy'), lr5 = byName('fmnist-lr5');
  const multi = runs.filter((r) => r.name.startsWith('fmnist-multitask'));
  check(healthy && lr5 && multi.length === 3, 'the trainers wrote 5 runs (' + runs.map((r) => r.name).join(', ') + ')');

  const page = await newPage();
  // --- run list: search, sort, columns, keyboard
  await page.goto(base);
  await page.waitForSelector('#runs tbody tr[data-run-id="' + lr5.id + '"]');
  check((await page.$$('#runs tbody tr')).length === 5, 'the run list shows the 5 runs');
  await page.keyboard.press('/');
  check(await page.evaluate(() => document.activeElement.id === 'run-search'), '"/" focuses the run search');
  await page.keyboard.type('multitask');
  await page.waitForFunction(() => document.querySelectorAll('#runs tbody tr').length === 3);
  check(true, 'searching "multitask" leaves the 3 multitask runs');
  await page.keyboard.press('Escape');
  await page.fill('#run-search', '');
  await page.waitForFunction(() => document.querySelectorAll('#runs tbody tr').length === 5);
  await page.click('#runs th[data-col="duration"]');
  await page.click('#runs th[data-col="duration"]');
  const durations = await page.$$eval('#runs tbody tr', (rows) => rows.map((r) => window.losslens.state.runsById.get(Number(r.dataset.runId)).duration));
  check(durations.every((d, i) => i === 0 || d <= durations[i - 1]), 'sorting by duration (descending) orders the rows');
  await page.click('details.menu summary:has-text("config columns")');
  await page.click('#cols-menu label:has-text("weighting") input');
  await page.waitForSelector('#runs th[data-col="cfg:weighting"]');
  const weightings = await page.$$eval('#runs tbody tr', (rows) => rows.map((r) => r.lastElementChild.textContent));
  check(['none', 'fixed', 'uncertainty'].every((w) => weightings.includes(w)), 'the config column "weighting" shows each run\'s value (' + weightings.filter(Boolean).join(', ') + ')');
  check(/cols=weighting/.test(page.url()), 'the URL keeps the chosen columns');
  await page.keyboard.press('Escape');
  await shot(page, 'runs.png');

  // --- compare loss/cls across the three multitask runs, with smoothing
  for (const r of multi) await page.check('#runs tr[data-run-id="' + r.id + '"] input[type=checkbox]');
  await page.click('#compare-selected');
  await page.waitForSelector('#chart-cmp_loss');
  await page.click('#cmp-series-summary');
  await page.check('#cmp-series label:has-text("loss/cls") input');
  await page.uncheck('#cmp-series label:text-is("loss") input');
  await page.keyboard.press('Escape');
  await page.waitForSelector('#chart-cmp_loss_cls .legend .li >> nth=2');
  await page.$eval('#smoothing', (e) => { e.value = '0.8'; e.dispatchEvent(new Event('input')); });
  await page.waitForFunction(() => /sm=0.8/.test(location.hash));
  await page.waitForFunction(() => Number(document.querySelector('#chart-cmp_loss_cls')?.dataset.points) >= 900);
  const legend = await page.$$eval('#chart-cmp_loss_cls .legend .li', (items) => items.map((i) => i.textContent));
  check(legend.length === 3 && multi.every((r) => legend.some((t) => t.includes('#' + r.id + ' '))), 'the compare chart overlays loss/cls of the 3 runs with a legend per run (' + legend.join(' | ') + ')');
  // Zoom by dragging across the compare chart. The smoothing just set rebuilds the chart a
  // moment later; a drag on the plot being replaced does nothing, so it is tried again.
  for (let attempt = 0; attempt < 3 && !/from=\d+&to=\d+/.test(page.url()); attempt++) {
    const ob = await plotBox(page, '#chart-cmp_loss_cls .u-over');
    await page.mouse.move(ob.x + ob.width * 0.25, ob.y + ob.height / 2);
    await page.mouse.down();
    await page.mouse.move(ob.x + ob.width * 0.6, ob.y + ob.height / 2, { steps: 6 });
    await page.mouse.up();
    await page.waitForFunction(() => /from=\d+&to=\d+/.test(location.hash), null, { timeout: 5000 }).catch(() => {});
  }
  await page.waitForFunction(() => /from=\d+&to=\d+/.test(location.hash), null, { timeout: 1000 });
  // The URL changes before the chart redraws with the new range: wait for the chart itself.
  await page.waitForFunction(() => {
    const m = /from=(\d+)&to=(\d+)/.exec(location.hash), d = document.querySelector('#chart-cmp_loss_cls')?.dataset;
    return m && d && Number(d.xmin) === Number(m[1]) && Number(d.xmax) === Number(m[2]);
  }, null, { timeout: 10000 });
  const zoomed = await data(page, '#chart-cmp_loss_cls');
  check(num(zoomed.xmin) > 50 && num(zoomed.xmax) < 200, 'dragging zooms the charts (steps ' + zoomed.xmin + '–' + zoomed.xmax + ')');
  await page.waitForTimeout(400);
  await shot(page, 'compare.png');
  const link = page.url();
  // The link reproduces the view: runs, series, smoothing, zoom.
  const again = await newPage();
  await again.goto(link);
  await again.waitForFunction(() => Number(document.querySelector('#chart-cmp_loss_cls')?.dataset.points) > 0 && document.querySelectorAll('#chart-cmp_loss_cls .legend .li').length === 3);
  const same = await data(again, '#chart-cmp_loss_cls');
  check(same.xmin === zoomed.xmin && same.xmax === zoomed.xmax && await again.$eval('#smoothing', (e) => e.value) === '0.8',
    'the link reproduces the view in a new page (runs, series, smoothing 0.8, steps ' + same.xmin + '–' + same.xmax + ')');
  await again.context().close();
  // Downloads of the view as shown.
  const [csvDl] = await Promise.all([page.waitForEvent('download'), page.click('#download-csv')]);
  const csv = fs.readFileSync(await csvDl.path(), 'utf8').trim().split('\n');
  const header = csv[0].split(',');
  check(header.join(',') === 'run_id,run_name,series,kind,step,wall_time,value,smoothed', 'the CSV has a header (' + csv[0] + ')');
  const cls = csv.slice(1).map((l) => l.split(',')).filter((f) => f[2] === 'loss/cls');
  const clsRuns = new Set(cls.map((f) => Number(f[0])));
  const steps = cls.map((f) => Number(f[4]));
  check(multi.every((r) => clsRuns.has(r.id)) && Math.min(...steps) >= num(zoomed.xmin) && Math.max(...steps) <= num(zoomed.xmax),
    'the CSV holds loss/cls of the 3 runs inside the zoom (' + cls.length + ' rows, steps ' + Math.min(...steps) + '–' + Math.max(...steps) + ')');
  const [jsonDl] = await Promise.all([page.waitForEvent('download'), page.click('#download-json')]);
  const js = JSON.parse(fs.readFileSync(await jsonDl.path(), 'utf8'));
  check(js.view.sm === 0.8 && js.series.filter((s) => s.series === 'loss/cls').length === 3 && js.url === page.url(),
    'the JSON download holds the view and the series (' + js.series.length + ' series)');

  // --- findings as navigation on the --lr 5 run
  const findings = (await (await fetch(base + 'api/runs/' + lr5.id + '/findings')).json()).findings;
  await page.goto(base + '#/run/' + lr5.id);
  await page.waitForFunction(() => Number(document.querySelector('#chart-grad')?.dataset.points) > 0);
  await page.waitForTimeout(300);
  const charts = await page.$$eval('.chart[data-key]', (cs) => cs.map((c) => ({ key: c.dataset.key, series: JSON.parse(c.dataset.markerSeries || '{}'), lines: [...c.querySelectorAll('.legend .li')].map((i) => i.dataset.series) })));
  for (const f of findings) {
    const holder = charts.find((c) => c.lines.includes(f.series));
    check(holder && holder.series[f.series] >= 1, f.kind + ': a marker on its series ' + f.series + ' (chart ' + (holder && holder.key) + ', ' + (holder && holder.series[f.series]) + ')');
  }
  const named = new Set(findings.map((f) => f.series));
  check(charts.every((c) => Object.keys(c.series).every((s) => named.has(s))), 'markers appear only on the series the findings name');
  await page.$eval('#lanes', (e) => e.scrollIntoView({ block: 'center' }));
  await page.waitForFunction(() => Number(document.querySelector('#lanes').dataset.bars) > 0);
  const lanes = await data(page, '#lanes');
  check(num(lanes.lanes) === new Set(findings.map((f) => f.kind)).size && num(lanes.bars) >= findings.length,
    'the lanes under the charts: one per finding kind (' + lanes.lanes + '), a bar per episode (' + lanes.bars + ')');
  await shot(page, 'lanes.png');
  await page.evaluate(() => window.scrollTo(0, 0));
  // Robust range: the explosion (1e16 and more) does not flatten the loss.
  const loss = await data(page, '#chart-loss');
  check(num(loss.ymax) < 100 && num(loss.clipped) > 0, 'the loss y-range leaves the exploding steps out (max ' + (+loss.ymax).toPrecision(3) + ', ' + loss.clipped + ' marked at the edge)');
  check(loss.yticks.split('|').every((t) => t && t !== 'null'), 'loss tick labels: ' + loss.yticks);
  await page.click('#chart-loss button.tog:has-text("show all")');
  await page.waitForFunction(() => Number(document.querySelector('#chart-loss').dataset.ymax) > 1e6);
  check(true, '"show all" takes in every value (max ' + (+(await data(page, '#chart-loss')).ymax).toExponential(2) + ')');
  // Log scale per chart: zeros (dead ReLU gradients) and a real log axis.
  await page.click('#chart-grad button.tog:has-text("log")');
  await page.click('#chart-loss button.tog:has-text("log")');
  await page.waitForFunction(() => document.querySelector('#chart-grad').dataset.distr === '4' && document.querySelector('#chart-loss').dataset.distr === '3');
  const grad = await data(page, '#chart-grad');
  const gt = grad.yticks.split('|');
  check(gt.length >= 3 && gt.every((t) => t && t !== 'null') && new Set(gt).size === gt.length, 'gradient log axis (symmetric: zeros in view): distinct labels ' + grad.yticks);
  check((await data(page, '#chart-lr')).distr === '1', 'the log switch is per chart (learning rate stays linear)');
  await shot(page, 'findings-log.png');
  // Click the marker of the last finding: every chart zooms to its steps, its row is selected.
  const target = findings[findings.length - 1];
  const mk = await page.evaluate((id) => {
    for (const c of window.losslens.state.charts) {
      const m = c.markers.find((x) => x.id === id);
      if (m) { const r = c.u.over.getBoundingClientRect(); return { x: r.x + m.x, y: r.y + m.y, key: c.key }; }
    }
    return null;
  }, target.id);
  check(mk, 'the marker of ' + target.kind + ' is on the screen');
  await page.mouse.click(mk.x, mk.y);
  await page.waitForSelector('#finding-detail:not([hidden])');
  const detail = await page.textContent('#finding-detail');
  check(detail.includes(target.kind) && detail.includes(target.advice.slice(0, 30)), 'clicking the marker opens ' + target.kind + ' with its advice');
  const span = target.last_step - target.first_step + 1;
  const [za, zb] = await chartsZoomed(page);
  check(za <= target.first_step && zb >= target.last_step && za >= target.first_step - span && zb <= target.last_step + span + 5,
    'every chart zoomed to steps ' + za + '–' + zb + ' around the finding (' + target.first_step + '–' + target.last_step + ')');
  check(await page.$eval('#findings tr.selected', (r) => Number(r.dataset.findingId)) === target.id, 'its table row is selected');
  const widths = await page.evaluate((name) => { const c = window.losslens.state.charts.find((x) => x.lines.some((l) => l.name === name)); return c.lines.map((l, i) => [l.name, c.lineWidth(i), c.dimmed(i)]); }, target.series);
  check(widths.every(([n, w, d]) => (n === target.series ? w === 3 && !d : d)), 'the named series is highlighted, the others dimmed');
  await shot(page, 'finding-zoom.png');
  // Esc closes; arrows step through the findings; a table row zooms too.
  await page.keyboard.press('Escape');
  check(await page.isHidden('#finding-detail'), 'Esc closes the finding');
  await page.keyboard.press('ArrowLeft');
  await page.waitForSelector('#finding-detail:not([hidden])');
  const prev = findings[findings.length - 2] || target;
  check((await page.textContent('#finding-detail h4')).includes(prev.kind), '← steps to the previous finding (' + prev.kind + ')');
  await page.keyboard.press('Escape');
  await page.click('#findings tbody tr[data-finding-id="' + findings[0].id + '"]');
  await page.waitForFunction((id) => new RegExp('f=' + id + '(&|$)').test(location.hash), findings[0].id);
  const [ra, rb] = await chartsZoomed(page);
  check(ra <= findings[0].first_step && rb >= findings[0].last_step && rb - ra <= 2 * (findings[0].last_step - findings[0].first_step + 1) + 12,
    'clicking a table row zooms every chart to that finding (steps ' + ra + '–' + rb + ')');
  // Filter: hide a kind.
  await page.keyboard.press('Escape');
  await page.click('#kind-filter [data-kind="' + findings[0].kind + '"]');
  await page.waitForFunction((k) => /hide=/.test(location.hash), findings[0].kind);
  const visibleRows = await page.$$eval('#findings tbody tr', (rows) => rows.filter((r) => !r.hidden).length);
  check(visibleRows === findings.filter((f) => f.kind !== findings[0].kind).length, 'hiding ' + findings[0].kind + ' leaves ' + visibleRows + ' rows');
  await page.click('#kind-filter [data-kind="' + findings[0].kind + '"]');
  // A finding that is another sign of an incident (this run: constant predictions under the
  // vanishing gradients) keeps its row, marked, and its popup names the incident.
  const sign = findings.find((f) => f.symptom_of_id);
  check(sign && findings.some((f) => f.id === sign.symptom_of_id), 'the run has a finding listed as another sign of an incident (' + (sign && sign.kind) + ')');
  const signRow = '#findings tbody tr[data-finding-id="' + sign.id + '"]';
  await page.waitForFunction((q) => { const r = document.querySelector(q); return r && !r.hidden; }, signRow);
  const cell = await page.$eval(signRow + ' td:nth-child(3)', (td) => ({ text: td.textContent, title: td.title }));
  check(cell.text.startsWith('↳ ' + sign.kind) && cell.title === 'another sign of ' + sign.symptom_of, 'its row is marked ↳ (' + cell.text + ') with the incident in its tooltip');
  await page.click(signRow);
  await page.waitForSelector('#finding-detail:not([hidden])');
  check((await page.textContent('#finding-detail')).includes('another sign of ' + sign.symptom_of), 'its popup says which incident it is another sign of');
  await page.keyboard.press('Escape');

  // --- readable charts on a multitask run: task losses on their own axes, time axes, hover
  const mt = multi.find((r) => /none/.test(r.name));
  await page.goto(base + '#/run/' + mt.id);
  await page.waitForFunction(() => Number(document.querySelector('#chart-loss')?.dataset.points) > 0);
  const ml = await data(page, '#chart-loss');
  check(ml.taskMode === 'axes' && num(ml.axes) >= 3, 'per-task losses of very different size get their own axes (' + ml.axes + ' y-axes)');
  await page.selectOption('#tasks-mode', 'norm');
  await page.waitForFunction(() => document.querySelector('#chart-loss')?.dataset.taskMode === 'norm' && Number(document.querySelector('#chart-loss').dataset.points) > 0);
  const nl = await data(page, '#chart-loss');
  check(num(nl.ymax) < 5 && num(nl.ymin) >= 0, 'normalised: each task loss relative to its start (y ' + (+nl.ymin).toFixed(2) + '–' + (+nl.ymax).toFixed(2) + ')');
  await page.selectOption('#x-mode', 'wall');
  await page.waitForFunction(() => /\d\d:\d\d/.test(document.querySelector('#chart-loss')?.dataset.xticks || ''));
  check(true, 'wall-time x-axis: ' + (await data(page, '#chart-loss')).xticks);
  await page.selectOption('#x-mode', 'rel');
  await page.waitForFunction(() => /^\+\d+:\d\d/.test(document.querySelector('#chart-loss')?.dataset.xticks || ''));
  check(true, 'relative-time x-axis: ' + (await data(page, '#chart-loss')).xticks);
  await page.selectOption('#x-mode', 'step');
  // The charts are rebuilt for the new x-axis: measure the new plot, not the one being replaced.
  await page.waitForFunction(() => !/:/.test(document.querySelector('#chart-loss')?.dataset.xticks || ':'));
  const lo = await plotBox(page, '#chart-loss .u-over');
  await page.mouse.move(lo.x + lo.width * 0.53, lo.y + lo.height / 2);
  await page.waitForTimeout(150);
  const hover = await page.evaluate(() => ['#chart-loss', '#chart-grad'].map((s) => ({
    step: document.querySelector(s + ' .readout').textContent, values: [...document.querySelectorAll(s + ' .legend .lv')].map((v) => v.textContent) })));
  check(hover[0].step && hover[0].step === hover[1].step && hover.every((h) => h.values.every((v) => v !== '' && v !== '-')),
    'hover: both charts read the same step (' + hover[0].step + ') and every series has a value');
  await shot(page, 'multitask.png');

  // --- stable colours per series name across runs
  const colours = async (id) => {
    await page.goto(base + '#/run/' + id);
    await page.waitForFunction(() => document.querySelectorAll('#chart-grad .legend .li').length > 1);
    return page.$$eval('#chart-grad .legend .li', (items) => Object.fromEntries(items.map((i) => [i.dataset.series, i.querySelector('.sw').style.background])));
  };
  const ca = await colours(healthy.id), cb = await colours(lr5.id);
  const common = Object.keys(ca).filter((k) => k in cb);
  check(common.length >= 2 && common.every((k) => ca[k] === cb[k]), 'a series keeps its colour across runs (' + common.join(', ') + ')');

  // --- dark mode, the toggle, the error page
  const dark = await newPage({ dark: true });
  await dark.goto(base + '#/run/' + lr5.id);
  await dark.waitForFunction(() => Number(document.querySelector('#chart-loss')?.dataset.points) > 0);
  check(await dark.evaluate(() => document.documentElement.dataset.theme) === 'dark', 'prefers-color-scheme: dark gives the dark theme');
  await dark.waitForTimeout(300);
  await shot(dark, 'dark.png');
  await dark.click('#theme-toggle');
  check(await dark.evaluate(() => document.documentElement.dataset.theme) === 'light', 'the toggle switches to light');
  await dark.click('#theme-toggle');
  check(page.errors.length === 0 && dark.errors.length === 0, 'no page errors' + page.errors.concat(dark.errors).join('; '));
  await dark.goto(base + '#/run/999');  // its 404 answers are the point
  await dark.waitForSelector('#error-view:not([hidden])');
  check((await dark.textContent('#error-title')).includes('No run #999') && await dark.isHidden('#run-view'), 'an unknown run id shows an error page, not empty controls');
  await shot(dark, 'error.png');
  await dark.context().close();
  await page.context().close();

  // --- the same history behind a token: the page opened with ?token= loads its own files,
  // lists the runs and connects its websocket; the API without the token is refused.
  const token = 'browser-test-token-0123456789';
  const guarded = await start(cliBin, ['serve', '--db', db, '--port', '0', '--token', token], /dashboard for .* at http/);
  const gbase = guarded.first.match(/http:\/\/[^/]+\//)[0];
  check((await fetch(gbase + 'api/runs')).status === 401, 'with a token, the API without it answers 401');
  const tp = await newPage();
  await tp.goto(gbase + '?token=' + token);
  await tp.waitForFunction(() => document.querySelectorAll('#runs tbody tr').length === 5);
  await tp.waitForFunction(() => document.querySelector('#conn').textContent === 'connected');
  check(tp.errors.length === 0, 'with a token, the page opened with ?token= lists the 5 runs and its websocket connects' + (tp.errors.length ? ': ' + tp.errors.join('; ') : ''));
  await tp.context().close();
  guarded.child.kill('SIGTERM');
}

// ------------------------------------------------------------------ B. a live run

async function liveRun() {
  const { child: writer, first, lines } = await start(writerBin, [path.join(tmp, 'live.db'), '90']);
  const { port, run } = JSON.parse(first);
  const base = 'http://127.0.0.1:' + port + '/';
  const page = await newPage();
  await page.goto(base);
  await page.waitForSelector('#runs tr[data-run-id="' + run + '"]', { timeout: 10000 });
  const row = await page.textContent('#runs tr[data-run-id="' + run + '"]');
  check(row.includes('resnet-lr0.1') && row.includes('running'), 'the live run is listed as running');

  await page.click('#runs tr[data-run-id="' + run + '"] td:nth-child(3)');
  const points = () => page.evaluate(() => Number(document.querySelector('#chart-loss')?.dataset.points || 0));
  await page.waitForFunction(() => Number(document.querySelector('#chart-loss')?.dataset.points) > 0, null, { timeout: 10000 });
  const n1 = await points();
  await page.waitForFunction((n) => Number(document.querySelector('#chart-loss')?.dataset.points) > n + 50, n1, { timeout: 15000 });
  check(true, 'the loss chart grows live (' + n1 + ' -> ' + await points() + ' points)');
  await page.waitForFunction(() => document.body.dataset.live === '1', null, { timeout: 10000 });
  check(await page.isVisible('#live'), 'the live indicator shows');
  // The writer records a spike finding at step 404 and a NaN at 420.
  await page.waitForFunction(() => JSON.parse(document.querySelector('#chart-loss')?.dataset.markerSeries || '{}').loss >= 1, null, { timeout: 30000 });
  check(true, 'a finding marker is drawn on the loss series');
  await page.waitForFunction(() => Number(document.querySelector('#chart-loss')?.dataset.nonfinite) >= 1, null, { timeout: 15000 });
  check(true, 'the NaN point is drawn as a marker');
  await page.waitForFunction(() => /20,000 samples/.test(document.querySelector('#drop-warning').textContent), null, { timeout: 30000 });
  const warning = await page.textContent('#drop-warning');
  check(/monitor dropped 20,000 samples \(queue full\)/.test(warning) && /attach_options::queue_capacity/.test(warning), 'the run header follows the live drops events (' + warning.trim() + ')');
  const dropRows = await page.$$eval('#events tbody tr.drops', (rows) => rows.map((r) => r.textContent));
  check(dropRows.length === 2, 'both drops events are listed in the events table');
  await page.click('#findings tbody tr');
  check(/lower the/.test(await page.textContent('#finding-detail')), 'a finding\'s details include the advice');
  await page.keyboard.press('Escape');
  await page.click('#reset-zoom');

  // The server goes away and comes back: the banner shows, the page reconnects and catches up.
  const lossSteps = () => page.evaluate(() => {
    const e = window.losslens.state.store.get(window.losslens.state.run.id).get('loss');
    const pts = e.full.pts;
    let holes = 0, repeats = 0;
    for (let i = 1; i < pts.length; i++) { const d = pts[i][0] - pts[i - 1][0]; if (d > 1) holes++; if (d < 1) repeats++; }
    return { exact: e.full.bw === 1, n: pts.length, first: pts.length ? pts[0][0] : -1, last: pts.length ? pts[pts.length - 1][0] : -1, holes, repeats };
  });
  const before = await lossSteps();
  writer.stdin.write('restart\n');
  await page.waitForSelector('#offline-banner:not([hidden])', { timeout: 10000 });
  check(/Offline/.test(await page.textContent('#offline-banner')) && await page.textContent('#conn') === 'offline', 'an offline banner shows while the server is gone');
  await shot(page, 'offline.png');
  await new Promise((resolve) => lines.on('line', (l) => { if (l === 'restarted') resolve(); }));
  await page.waitForFunction(() => document.querySelector('#conn').textContent === 'connected' && document.body.dataset.live === '1', null, { timeout: 15000 });
  check(await page.isHidden('#offline-banner'), 'the banner goes when the page has reconnected');
  const n3 = await points();
  await page.waitForFunction((n) => Number(document.querySelector('#chart-loss')?.dataset.points) > n + 20, n3, { timeout: 15000 });
  const after = await lossSteps();
  check(after.exact && after.first === 0 && after.holes === 0 && after.repeats === 0 && after.last > before.last + 20,
    'no gap or repeat in the loss series across the restart (steps ' + after.first + '..' + after.last + ', ' + after.n + ' points; ' + before.last + ' before)');
  // Compare with the finished run.
  await page.click('#cmp-runs-summary');
  await page.check('#cmp-runs label[data-run-id="1"] input');
  await page.keyboard.press('Escape');
  await page.waitForFunction(() => [...document.querySelectorAll('#chart-cmp_loss .legend .li')].some((e) => e.textContent.includes('#1 baseline-lr0.05')), null, { timeout: 10000 });
  check(true, 'a compared run joins the comparison chart');
  // Off-screen parts catch up when scrolled to: pass by the lanes before the full-page shot.
  await page.$eval('#lanes', (e) => e.scrollIntoView({ block: 'center' }));
  await page.waitForTimeout(800);
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.waitForTimeout(300);
  await shot(page, 'live.png', true);
  check(page.errors.length === 0, 'no page errors' + (page.errors.length ? ': ' + page.errors.join('; ') : ''));
  await page.context().close();
  writer.stdin.end();
}

// ------------------------------------------------------------------ C. live at scale

async function liveAtScale() {
  const STEPS = 200000, FINDINGS = 1000;
  const w0 = Date.now();
  const { child: writer, first, lines } = await start(writerBin, [path.join(tmp, 'big.db'), '40', '--big', String(STEPS), String(FINDINGS)]);
  const { port, run } = JSON.parse(first);
  console.log('note: ' + STEPS + ' steps written in ' + ((Date.now() - w0) / 1000).toFixed(1) + ' s; streaming 500 steps/s');
  const commits = [];
  lines.on('line', (l) => { try { const j = JSON.parse(l); if (j.commit !== undefined) commits.push([j.commit, j.t]); } catch (e) { /* not ours */ } });
  const page = await newPage();
  await page.goto('http://127.0.0.1:' + port + '/#/run/' + run);
  await page.waitForFunction(() => document.body.dataset.firstChartMs, null, { timeout: 30000 });
  const firstChart = Number(await page.evaluate(() => document.body.dataset.firstChartMs));
  await page.waitForFunction((n) => document.querySelectorAll('#findings tbody tr').length >= n, FINDINGS, { timeout: 30000 });
  await page.waitForTimeout(2000);  // live for a while
  // Frames per second and main-thread time in long tasks over 5 s of live updates.
  const measured = await page.evaluate(() => new Promise((resolve) => {
    let frames = 0, longTasks = 0;
    const obs = new PerformanceObserver((l) => { for (const e of l.getEntries()) longTasks += e.duration; });
    obs.observe({ type: 'longtask' });
    const paints0 = window.losslens.state.perf.paints.length;
    const start = performance.now();
    const tick = () => {
      frames++;
      if (performance.now() - start < 5000) requestAnimationFrame(tick);
      else { obs.disconnect(); const s = (performance.now() - start) / 1000; resolve({ fps: frames / s, longTaskShare: longTasks / 1000 / s, from: performance.timeOrigin + start, paints: window.losslens.state.perf.paints.length - paints0 }); }
    };
    requestAnimationFrame(tick);
  }));
  const paints = await page.evaluate(() => window.losslens.state.perf.paints);
  // Commit-to-pixel: for each commit in the window, the first frame that drew its step.
  const lat = [];
  for (const [step, t] of commits) {
    if (t < measured.from) continue;
    const p = paints.find((q) => q[0] >= step);
    if (p) lat.push(p[1] - t);
  }
  lat.sort((a, b) => a - b);
  const q = (x) => (lat.length ? lat[Math.min(lat.length - 1, Math.floor(x * lat.length))] : NaN);
  const rows = await page.$$eval('#findings tbody tr', (r) => r.length);
  const loss = await data(page, '#chart-loss');
  const summary = { steps: STEPS, findings: rows, first_chart_ms: Math.round(firstChart), fps: +measured.fps.toFixed(1),
    long_task_share: +measured.longTaskShare.toFixed(2), commit_to_pixel_ms: { p50: Math.round(q(0.5)), p95: Math.round(q(0.95)), n: lat.length },
    load_avg_1m: +load(), cpus: os.cpus().length };
  console.log('live at scale: ' + JSON.stringify(summary));
  await shot(page, 'scale.png');
  // While it streams: hovering reads one step on every chart; clicking a finding's tick in
  // the rug zooms every chart to it.
  const lo = await plotBox(page, '#chart-loss .u-over');
  await page.mouse.move(lo.x + lo.width * 0.4, lo.y + lo.height * 0.3);
  await page.waitForTimeout(200);
  const readouts = await page.$$eval('.chart[data-key] .readout', (r) => r.map((e) => e.textContent).filter(Boolean));
  check(readouts.length >= 2 && readouts.every((t) => t === readouts[0]), 'hover on a live 200k-step run: every visible chart reads ' + readouts[0]);
  check(loss.rug === '1', 'the loss chart shows its ' + loss.markers + ' finding episodes as a rug under the curves');
  // A tick near the middle of the plot (the plot moves a little as the run grows: read the
  // position right before clicking, and try again if a redraw moved it away).
  for (let attempt = 0; attempt < 3 && !/f=\d+/.test(page.url()); attempt++) {
    const tick = await page.evaluate(() => {
      const c = window.losslens.state.charts.find((x) => x.key === 'loss');
      const r = c.u.over.getBoundingClientRect();
      const m = c.markers.reduce((a, b) => (Math.abs(b.x - r.width / 2) < Math.abs(a.x - r.width / 2) ? b : a));
      return { x: r.x + m.x, y: r.y + m.y };
    });
    await page.mouse.click(tick.x, tick.y);
    await page.waitForTimeout(300);
  }
  await page.waitForFunction(() => /f=\d+/.test(location.hash));
  const picked = await page.evaluate(() => window.losslens.state.findings.get(window.losslens.state.selected));
  const [za, zb] = await chartsZoomed(page);
  check(za <= picked.first_step && zb >= picked.last_step && zb - za < 200,
    'clicking a tick zooms every chart, while live, to ' + picked.kind + ' ' + picked.first_step + '–' + picked.last_step + ' (steps ' + za + '–' + zb + ')');
  await shot(page, 'scale-zoom.png');
  await page.keyboard.press('Escape');
  await page.click('#reset-zoom');
  await page.$eval('#lanes', (e) => e.scrollIntoView({ block: 'center' }));
  await page.waitForFunction((n) => Number(document.querySelector('#lanes').dataset.lanes) === 5 && Number(document.querySelector('#lanes').dataset.bars) >= n, FINDINGS);
  check(rows >= FINDINGS && num(loss.markers) > 100, 'the 200k-step run shows its findings: ' + rows + ' rows, ' + loss.markers +
    ' markers on the loss chart, 5 lanes with ' + (await data(page, '#lanes')).bars + ' bars');
  await shot(page, 'scale-lanes.png');
  check(measured.paints > 0 && lat.length > 0, 'live points reach the screen while measuring (' + measured.paints + ' paints)');
  check(page.errors.length === 0, 'no page errors' + (page.errors.length ? ': ' + page.errors.join('; ') : ''));
  await page.context().close();
  writer.stdin.end();
}

async function main() {
  browser = await chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
           '--disable-sync', '--no-first-run'],
  });
  await realRuns();
  console.log('note: part A done after ' + ((Date.now() - t0) / 1000).toFixed(0) + ' s');
  await liveRun();
  console.log('note: part B done after ' + ((Date.now() - t0) / 1000).toFixed(0) + ' s');
  await liveAtScale();
  console.log('note: done after ' + ((Date.now() - t0) / 1000).toFixed(0) + ' s (load average ' + load() + ', screenshots in ' + outDir + ')');
}

main().then(() => 0, (e) => { console.error('FAIL: ' + (e && e.stack || e)); return 1; }).then(async (code) => {
  try { if (browser) await browser.close(); } catch (e) { /* already gone */ }
  for (const c of children) {
    if (c.exitCode !== null) continue;
    try { c.stdin.end(); } catch (e) { /* closed */ }
    c.kill('SIGTERM');
    await new Promise((r) => { c.once('exit', r); setTimeout(() => { c.kill('SIGKILL'); r(); }, 5000); });
  }
  fs.rmSync(tmp, { recursive: true, force: true });
  clearTimeout(timer);
  process.exit(code);
});
