// Browser test: real headless Chromium (Debian's /usr/bin/chromium driven by playwright-core)
// against the dashboard served by a live writer (tests/browser/live_writer.cpp).
// usage: node browser.test.js WRITER_BINARY OUTPUT_DIR
// Exit status: 0 pass, 1 fail, 77 skipped (no Chromium or playwright-core).
'use strict';
const { spawn } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const readline = require('readline');

const SKIP = 77;
const [writerBin, outDir] = process.argv.slice(2);
const chromiumPath = process.env.LOSSLENS_CHROMIUM || '/usr/bin/chromium';
if (!writerBin || !outDir) { console.error('usage: node browser.test.js WRITER OUTPUT_DIR'); process.exit(2); }
if (!fs.existsSync(chromiumPath)) { console.log('SKIP: no Chromium at ' + chromiumPath); process.exit(SKIP); }
let chromium;
try { ({ chromium } = require('playwright-core')); } catch (e) {
  console.log('SKIP: playwright-core missing (npm ci --prefix dashboard/web)'); process.exit(SKIP);
}

const timer = setTimeout(() => { console.error('FAIL: timed out'); process.exit(1); }, 120000);
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'losslens-browser-'));
fs.mkdirSync(outDir, { recursive: true });
let writer = null, context = null;

function check(cond, what) {
  if (!cond) throw new Error(what);
  console.log('ok - ' + what);
}

async function main() {
  writer = spawn(writerBin, [path.join(tmp, 'runs.db'), '90'], { stdio: ['pipe', 'pipe', 'inherit'] });
  const first = await new Promise((resolve, reject) => {
    readline.createInterface({ input: writer.stdout }).once('line', resolve);
    writer.once('exit', (code) => reject(new Error('writer exited with ' + code)));
  });
  const { port, run } = JSON.parse(first);
  const base = 'http://127.0.0.1:' + port + '/';

  context = await chromium.launchPersistentContext(path.join(tmp, 'profile'), {
    executablePath: chromiumPath,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
           '--disable-component-update', '--disable-sync', '--no-first-run'],
    viewport: { width: 1280, height: 1100 },
  });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  // Refused connections while the server restarts (on purpose, below) are expected.
  page.on('console', (m) => { if (m.type() === 'error' && !/ERR_CONNECTION_REFUSED/.test(m.text())) errors.push(m.text()); });

  await page.goto(base);
  await page.waitForSelector('#runs tr[data-run-id="' + run + '"]', { timeout: 10000 });
  const row = await page.textContent('#runs tr[data-run-id="' + run + '"]');
  check(row.includes('resnet-lr0.1') && row.includes('running'), 'the live run is listed as running');
  await page.screenshot({ path: path.join(outDir, 'runs.png') });

  await page.click('#runs tr[data-run-id="' + run + '"]');
  const points = () => page.evaluate(() => Number((document.querySelector('#chart-loss') || {}).dataset?.points || 0));
  await page.waitForFunction(() => Number(document.querySelector('#chart-loss')?.dataset.points) > 0, null, { timeout: 10000 });
  const n1 = await points();
  check(n1 > 0, 'the loss chart has points (' + n1 + ')');
  await page.waitForFunction((n) => Number(document.querySelector('#chart-loss')?.dataset.points) > n + 50, n1, { timeout: 15000 });
  const n2 = await points();
  check(n2 > n1 + 50, 'the point count grows live (' + n1 + ' -> ' + n2 + ')');
  await page.waitForFunction(() => document.body.dataset.live === '1', null, { timeout: 10000 });
  check(await page.isVisible('#live'), 'the live indicator shows');
  // The writer records a spike finding at step 404 and a NaN at 420 (after ~8 s of streaming).
  await page.waitForFunction(() => Number(document.querySelector('#chart-loss')?.dataset.markers) >= 1, null, { timeout: 30000 });
  check(true, 'a finding marker is drawn on the loss chart');
  await page.waitForFunction(() => Number(document.querySelector('#chart-loss')?.dataset.nonfinite) >= 1, null, { timeout: 15000 });
  check(true, 'the NaN point is drawn as a marker');
  // Queue overflow: the writer records a monitor drops event at step 350 (12,345 samples) and
  // at step 700 (20,000 in all, arriving in a websocket delta): the run header warns.
  await page.waitForFunction(() => !document.querySelector('#drop-warning').hidden, null, { timeout: 15000 });
  const warning = await page.textContent('#drop-warning');
  check(/monitor dropped (12,345|20,000) samples \(queue full\)/.test(warning) && /attach_options::queue_capacity/.test(warning),
    'the run header warns about dropped samples (' + warning.trim() + ')');
  await page.waitForFunction(() => /20,000 samples/.test(document.querySelector('#drop-warning').textContent), null, { timeout: 30000 });
  check(true, 'the drop warning follows the live drops events (20,000 samples)');
  const dropRows = await page.$$eval('#events tbody tr.drops', (rows) => rows.map((r) => r.textContent));
  check(dropRows.length === 2 && dropRows.every((t) => /drops/.test(t)), 'both drops events are listed in the events table');
  await page.click('#findings tbody tr');
  check(await page.isVisible('#finding-detail'), 'clicking a finding shows its details');
  const detail = await page.textContent('#finding-detail');
  check(/lower the/.test(detail), 'the details include the advice');

  // Zoom: a drag asks the server for that step window.
  const over = await page.$('#chart-loss .u-over');
  await over.scrollIntoViewIfNeeded();
  const box = await over.boundingBox();
  const windowRequest = page.waitForRequest((r) => /\/points\?.*from=\d+/.test(r.url()), { timeout: 10000 });
  await page.mouse.move(box.x + box.width * 0.3, box.y + box.height / 2);
  await page.mouse.down();
  await page.mouse.move(box.x + box.width * 0.5, box.y + box.height / 2, { steps: 5 });
  await page.mouse.up();
  const zoomUrl = (await windowRequest).url();
  check(/to=\d+/.test(zoomUrl), 'zooming fetches the window from the server (' + zoomUrl.replace(/^.*\?/, '') + ')');
  await page.click('#reset-zoom');
  await page.click('#log-scale');
  await page.waitForFunction(() => Number(document.querySelector('#chart-loss')?.dataset.points) > 0, null, { timeout: 10000 });
  check(true, 'the log-scale chart has points');
  await page.click('#log-scale');

  // The server goes away and comes back: the page notices, reconnects and streams again.
  const lines = readline.createInterface({ input: writer.stdout });
  const lossSteps = () => page.evaluate(() => {
    const c = state.charts.find((x) => x.key === 'loss');
    const pts = (c && c.data.get('loss')) || [];
    let holes = 0, repeats = 0;
    for (let i = 1; i < pts.length; i++) {
      const d = pts[i][0] - pts[i - 1][0];
      if (d > 1) holes++;
      if (d < 1) repeats++;
    }
    return { exact: c && c.box.dataset.exact === '1', n: pts.length, first: pts.length ? pts[0][0] : -1,
             last: pts.length ? pts[pts.length - 1][0] : -1, holes, repeats };
  });
  const before = await lossSteps();
  writer.stdin.write('restart\n');
  await page.waitForFunction(() => document.querySelector('#conn').textContent === 'offline', null, { timeout: 10000 });
  check(true, 'the page shows the server going away');
  await new Promise((resolve) => lines.on('line', (l) => { if (l === 'restarted') resolve(); }));
  await page.waitForFunction(() => document.querySelector('#conn').textContent === 'connected' && document.body.dataset.live === '1', null, { timeout: 15000 });
  const n3 = await points();
  await page.waitForFunction((n) => Number(document.querySelector('#chart-loss')?.dataset.points) > n + 20, n3, { timeout: 15000 });
  check(true, 'after the restart it reconnects and the chart grows again');
  // The writer kept streaming while the server was down (1.5 s, ~75 steps): the page fetched
  // them over HTTP after resubscribing, and the deltas carry on from there. While the run is
  // shorter than the chart's point budget the server sends every point, so the loss series
  // must hold every step from 0 exactly once.
  const after = await lossSteps();
  if (after.exact) {
    check(after.first === 0 && after.holes === 0 && after.repeats === 0 && after.last > before.last + 20,
      'no gap or repeat in the loss series across the restart (steps ' + after.first + '..' + after.last +
      ', ' + after.n + ' points; ' + before.last + ' before the restart)');
  } else {
    console.log('note: loss chart downsampled (' + after.n + ' points), gap check not applicable');
  }

  // Compare with the finished run: its loss joins the loss chart.
  await page.selectOption('#compare', { label: '#1 baseline-lr0.05' });
  await page.waitForFunction(() => [...document.querySelectorAll('#chart-loss .u-legend th, #chart-loss .u-legend .u-label')].some((e) => e.textContent.includes('#1 loss')), null, { timeout: 10000 });
  check(true, 'the compared run is on the loss chart');
  await page.waitForTimeout(1500);
  await page.screenshot({ path: path.join(outDir, 'dashboard.png'), fullPage: true });
  check(errors.length === 0, 'no page errors' + (errors.length ? ': ' + errors.join('; ') : ''));
}

main().then(() => 0, (e) => { console.error('FAIL: ' + (e && e.stack || e)); return 1; }).then(async (code) => {
  try { if (context) await context.close(); } catch (e) { /* already gone */ }
  if (writer && writer.exitCode === null) {
    writer.stdin.end();
    await new Promise((r) => { writer.once('exit', r); setTimeout(() => { writer.kill('SIGKILL'); r(); }, 5000); });
  }
  fs.rmSync(tmp, { recursive: true, force: true });
  clearTimeout(timer);
  process.exit(code);
});
