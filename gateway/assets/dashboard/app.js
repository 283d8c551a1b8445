// Sluice dashboard: the page's behaviour. Polls the admin API every 5 s with the admin token
// (kept in sessionStorage), renders each card, and drives the traffic editor. Drawing is in
// charts.js. An ES module served as /dashboard/app.js; no build step, no dependencies.

import {
  PALETTE, DASH, isNum, str, fmtNum, fmtInt, fmtPct, fmtFrac, fmtP, fmtMs, fmtCi, fmtClock, fmtDateTime,
  toDate, withAgo, windowFmt, h, badge, kv, note, uniq, swatch, isShadow, legend, lineChart, chartBox, splitChart,
  histogramSvg,
} from './charts.js';

const REFRESH_MS = 5000;
const TRAFFIC_MINUTES = 30;
const TOKEN_KEY = 'sluice.adminToken';
const enc = encodeURIComponent;

const state = {
  auto: true,
  endpoints: new Map(), // name -> latest endpoint from /admin/endpoints
  latencyView: {},      // endpoint -> '' (p50/p99 by model) or a served model
  granularity: {},      // monitored endpoint -> granularity name
  column: {},           // monitored endpoint -> column selected for the histogram
  saw401: false,
  cycle: null, again: false, timer: null, renders: 0,
};


function card(id) {
  const el = document.getElementById(id);
  return { el, msg: el.querySelector(':scope > .msg'), body: el.querySelector(':scope > .body') };
}
function setMsg(el, text, isError) {
  el.textContent = text || '';
  el.classList.toggle('error', !!isError);
}
/** Reuses children by data-key (so open forms, focus and selects survive), drops the others, keeps order. */
function keyed(container, keys, create) {
  const old = new Map();
  for (const el of Array.from(container.children)) {
    if (el.dataset.key !== undefined && keys.includes(el.dataset.key) && !old.has(el.dataset.key)) old.set(el.dataset.key, el);
    else el.remove();
  }
  const out = new Map();
  keys.forEach((k, i) => {
    let el = old.get(k);
    if (!el) { el = create(k); el.dataset.key = k; }
    if (container.children[i] !== el) container.insertBefore(el, container.children[i] || null);
    out.set(k, el);
  });
  return out;
}
function syncSelect(sel, options, value) {
  const sig = JSON.stringify(options);
  if (sel.dataset.sig !== sig) {
    sel.replaceChildren(...options.map(([v, label]) => h('option', { value: v }, label)));
    sel.dataset.sig = sig;
  }
  if (value !== undefined && sel.value !== value) sel.value = value;
}

// ---------------------------------------------------------------- API
class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}
function token() {
  try { return sessionStorage.getItem(TOKEN_KEY) || ''; } catch (e) { return ''; }
}
async function api(path, opts = {}) {
  const headers = { Accept: 'application/json' };
  const t = token();
  if (t) headers.Authorization = 'Bearer ' + t;
  // every state-changing call says JSON, body or not: the admin API refuses one that does not
  if (opts.body !== undefined || (opts.method && opts.method !== 'GET')) headers['Content-Type'] = 'application/json';
  let res;
  try {
    res = await fetch(path, {
      method: opts.method || 'GET', headers, cache: 'no-store',
      body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
    });
  } catch (e) {
    throw new ApiError(0, 'network error: ' + ((e && e.message) || e));
  }
  const text = await res.text().catch(() => '');
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (e) { body = null; }
  if (!res.ok) {
    const msg = body && typeof body.error === 'string' ? body.error : (text.trim().slice(0, 200) || res.statusText || 'request failed');
    if (res.status === 401) { state.saw401 = true; showTokenBox(msg); }
    throw new ApiError(res.status, msg);
  }
  if (body === null || typeof body !== 'object') throw new ApiError(res.status, 'unexpected response (not JSON)');
  return body;
}
function errText(e) {
  if (e instanceof ApiError) {
    const base = e.status ? `HTTP ${e.status}: ${e.message}` : e.message;
    return e.status === 401 ? base + ' (enter the admin token at the top)' : base;
  }
  return 'error: ' + ((e && e.message) || e);
}

// ---------------------------------------------------------------- token box
const tokenBox = document.getElementById('token-box');
const tokenInput = tokenBox.querySelector('[data-testid=token-input]');
const tokenMsg = document.getElementById('token-msg');
function showTokenBox(msg) {
  tokenBox.hidden = false;
  tokenMsg.textContent = token() ? `Token rejected: ${msg}` : 'Admin token required';
}
function updateTokenBox() {
  if (state.saw401) return;
  tokenBox.hidden = !token();
  tokenMsg.textContent = '';
}
function saveToken() {
  const v = tokenInput.value.trim();
  try {
    if (v) sessionStorage.setItem(TOKEN_KEY, v); else sessionStorage.removeItem(TOKEN_KEY);
  } catch (e) { /* storage disabled: nothing to keep */ }
  tokenMsg.textContent = v ? 'token saved' : 'token cleared';
  refresh();
}
tokenInput.value = token();
tokenBox.querySelector('[data-testid=token-save]').addEventListener('click', saveToken);
tokenInput.addEventListener('keydown', (ev) => { if (ev.key === 'Enter') saveToken(); });

// ---------------------------------------------------------------- charts
function colorOf(endpoint, model) {
  const ep = state.endpoints.get(endpoint);
  let i = ep ? (ep.served_models || []).findIndex((m) => m.name === model) : -1;
  if (i < 0) { i = 7; for (const c of String(model)) i = (i * 31 + c.charCodeAt(0)) >>> 0; }
  return PALETTE[i % PALETTE.length];
}

// ---------------------------------------------------------------- endpoints + traffic edit
function observedShares(ep, traffic) {
  if (!traffic) return { parts: [], empty: 'traffic unavailable' };
  const shadows = new Set((ep.served_models || []).filter(isShadow).map((m) => m.name));
  const sums = new Map();
  for (const se of traffic.series || []) {
    if (se.endpoint !== ep.name || shadows.has(se.served_model)) continue;
    const n = (se.points || []).reduce((a, p) => a + (isNum(p.requests) ? p.requests : 0), 0);
    sums.set(se.served_model, (sums.get(se.served_model) || 0) + n);
  }
  const order = (ep.served_models || []).map((m) => m.name);
  const parts = Array.from(sums, ([model, value]) => ({ model, value }))
    .sort((a, b) => (order.indexOf(a.model) + 1 || 1e9) - (order.indexOf(b.model) + 1 || 1e9));
  return { parts, empty: `no requests in the last ${TRAFFIC_MINUTES} min` };
}

function renderEndpoints(list, traffic, err) {
  const c = card('card-endpoints');
  if (err) { setMsg(c.msg, 'Could not load endpoints — ' + errText(err), true); c.body.classList.add('stale'); return; }
  c.body.classList.remove('stale');
  setMsg(c.msg, list.length ? '' : 'no endpoints configured');
  const rows = keyed(c.body, list.map((e) => e.name), makeEndpointRow);
  for (const ep of list) fillEndpointRow(rows.get(ep.name), ep, traffic);
}
function makeEndpointRow(name) {
  const ed = makeEditor(name);
  const version = h('span', { class: 'muted', 'data-testid': 'endpoint-version' });
  const info = h('div', {}), chart = h('div', { class: 'ep-chart' });
  const row = h('div', { class: 'sub', 'data-testid': 'endpoint-row', 'data-endpoint': name },
    h('div', { class: 'ep-grid' },
      h('div', {}, h('div', { class: 'row' }, h('h3', {}, name), version, ed.button), info),
      chart),
    ed.root);
  row._parts = { ed, version, info, chart };
  return row;
}
function fillEndpointRow(row, ep, traffic) {
  const { ed, version, info, chart } = row._parts;
  version.textContent = `config v${str(ep.config_version)}`;
  info.replaceChildren(h('div', {}, (ep.served_models || []).map((m) => isShadow(m)
    ? h('span', { class: 'chip shadow', 'data-testid': 'served-model', 'data-model': m.name, 'data-shadow': 'true', title: `${str(m.model)} v${str(m.version)}` },
      `${m.name} · shadow, mirror ${fmtPct(m.mirror_percent)}`)
    : h('span', { class: 'chip', 'data-testid': 'served-model', 'data-model': m.name, title: `${str(m.model)} v${str(m.version)}` },
      swatch(colorOf(ep.name, m.name)),
      `${m.name} · ${str(m.model)} v${str(m.version)} · ${fmtPct(m.traffic_percentage)}`))));
  const obs = observedShares(ep, traffic);
  chart.replaceChildren(splitChart(ep, obs, (model) => colorOf(ep.name, model)),
    legend((ep.served_models || []).filter((m) => !isShadow(m)).map((m) => ({ color: colorOf(ep.name, m.name), label: m.name }))),
    h('div', { class: 'muted' }, `observed = share of requests per routed model over the last ${TRAFFIC_MINUTES} min (shadows excluded)`));
  syncEditor(ed, ep);
}

const routedOf = (ep) => (ep ? (ep.served_models || []).filter((m) => !isShadow(m)) : []);
function makeEditor(name) {
  const ed = { name, open: false };
  ed.inputs = h('div', { class: 'row' });
  ed.sum = h('span', { class: 'sum', 'data-testid': 'traffic-sum', 'data-endpoint': name });
  ed.form = h('div', { class: 'editbox', 'data-testid': 'traffic-form', 'data-endpoint': name, hidden: true },
    h('div', { class: 'muted' }, 'New traffic split, percent per routed served model (the server validates it):'),
    ed.inputs,
    h('div', { class: 'row gap-top' }, ed.sum,
      h('button', { class: 'primary', 'data-testid': 'traffic-review', 'data-endpoint': name, onclick: () => reviewEdit(ed) }, 'Review…'),
      h('button', { onclick: () => closeEditor(ed) }, 'Close')));
  ed.confirm = h('div', { class: 'editbox', 'data-testid': 'traffic-confirm', 'data-endpoint': name, role: 'dialog', hidden: true });
  ed.result = h('div', { class: 'result', 'data-testid': 'traffic-result', 'data-endpoint': name, hidden: true });
  ed.button = h('button', { 'data-testid': 'edit-traffic', 'data-endpoint': name, onclick: () => (ed.open ? closeEditor(ed) : openEditor(ed)) }, 'Edit traffic');
  ed.root = h('div', {}, ed.form, ed.confirm, ed.result);
  return ed;
}
function buildInputs(ed, models, keep) {
  ed.inputs.replaceChildren(...models.map((m) => {
    const v = keep && keep.has(m.name) ? keep.get(m.name) : isNum(m.traffic_percentage) ? String(m.traffic_percentage) : '';
    return h('label', {}, m.name + ' ',
      h('input', { type: 'number', min: 0, max: 100, step: 'any', value: v, 'data-testid': 'traffic-input', 'data-model': m.name,
        'data-endpoint': ed.name, oninput: () => updateSum(ed) }), ' %');
  }));
  ed.models = models.map((m) => m.name);
  updateSum(ed);
}
const inputsOf = (ed) => Array.from(ed.inputs.querySelectorAll('input[data-testid=traffic-input]'));
function parseInput(inp) {
  const v = inp.value.trim();
  return v === '' ? null : Number(v);
}
function updateSum(ed) {
  const sum = inputsOf(ed).reduce((a, inp) => a + (isNum(parseInput(inp)) ? parseInput(inp) : 0), 0);
  const rounded = Math.round(sum * 100) / 100;
  ed.sum.textContent = `Sum: ${rounded}%` + (rounded === 100 ? '' : ' (should be 100)');
  ed.sum.classList.toggle('off', rounded !== 100);
}
function openEditor(ed) {
  ed.open = true;
  buildInputs(ed, routedOf(state.endpoints.get(ed.name)));
  ed.form.hidden = false; ed.confirm.hidden = true; ed.result.hidden = true;
  ed.button.textContent = 'Close editor';
}
function closeEditor(ed) {
  ed.open = false;
  ed.form.hidden = true; ed.confirm.hidden = true;
  ed.button.textContent = 'Edit traffic';
}
/** Keeps typed values; rebuilds inputs only when the routed models change under an open form. */
function syncEditor(ed, ep) {
  if (!ed.open) return;
  const models = routedOf(ep);
  if (JSON.stringify(models.map((m) => m.name)) === JSON.stringify(ed.models)) return;
  buildInputs(ed, models, new Map(inputsOf(ed).map((inp) => [inp.dataset.model, inp.value])));
}
function reviewEdit(ed) {
  const ep = state.endpoints.get(ed.name);
  const old = new Map(routedOf(ep).map((m) => [m.name, m.traffic_percentage]));
  const routes = inputsOf(ed).map((inp) => ({ served_model_name: inp.dataset.model, traffic_percentage: parseInput(inp) }));
  const sum = routes.reduce((a, r) => a + (isNum(r.traffic_percentage) ? r.traffic_percentage : 0), 0);
  const apply = h('button', { class: 'primary', 'data-testid': 'traffic-apply', 'data-endpoint': ed.name, onclick: () => applyEdit(ed, routes, apply) }, 'Apply');
  ed.confirm.replaceChildren(
    h('div', {}, h('b', {}, `Change the traffic split of ${ed.name}?`)),
    h('table', {}, h('tr', {}, h('th', {}, 'served model'), h('th', { class: 'num' }, 'now'), h('th', {}, ''), h('th', { class: 'num' }, 'new')),
      routes.map((r) => h('tr', { 'data-testid': 'traffic-confirm-row', 'data-model': r.served_model_name },
        h('td', {}, r.served_model_name), h('td', { class: 'num' }, fmtPct(old.get(r.served_model_name))), h('td', {}, '→'),
        h('td', { class: 'num' + (old.get(r.served_model_name) !== r.traffic_percentage ? ' warn' : '') }, fmtPct(r.traffic_percentage))))),
    h('div', { class: 'row gap-top' }, h('span', { class: Math.abs(sum - 100) < 1e-9 ? 'muted' : 'warn' }, `Sum: ${Math.round(sum * 100) / 100}%`),
      apply, h('button', { 'data-testid': 'traffic-cancel', 'data-endpoint': ed.name, onclick: () => { ed.confirm.hidden = true; } }, 'Cancel')));
  ed.confirm.hidden = false;
  ed.result.hidden = true;
}
async function applyEdit(ed, routes, button) {
  button.disabled = true;
  const show = (ok, text) => { ed.result.dataset.ok = String(ok); ed.result.textContent = text; ed.result.hidden = false; };
  try {
    const ep = await api(`/admin/endpoints/${enc(ed.name)}/traffic`, { method: 'PATCH', body: { routes } });
    const split = routedOf(ep).map((m) => `${m.name} ${str(m.traffic_percentage)}`).join(' / ');
    show(true, `Applied: ${ed.name} is now at config v${str(ep.config_version)} (${split || DASH}).`);
    closeEditor(ed);
  } catch (e) {
    show(false, `Rejected${e.status ? ` (HTTP ${e.status})` : ''}: ${e.message}`);
    ed.confirm.hidden = true;
  } finally {
    button.disabled = false;
  }
  refresh();
}

// ---------------------------------------------------------------- traffic over time
function renderTraffic(epList, traffic, err) {
  const c = card('card-traffic');
  if (err) { setMsg(c.msg, 'Could not load traffic — ' + errText(err), true); c.body.classList.add('stale'); return; }
  c.body.classList.remove('stale');
  const names = uniq([...epList.map((e) => e.name), ...(traffic.series || []).map((se) => se.endpoint)]);
  setMsg(c.msg, names.length ? '' : 'no traffic recorded');
  const blocks = keyed(c.body, names, makeTrafficBlock);
  for (const n of names) fillTrafficBlock(blocks.get(n), n, traffic);
}
function makeTrafficBlock(name) {
  const select = h('select', { 'data-testid': 'latency-select', 'data-endpoint': name,
    onchange: () => { state.latencyView[name] = select.value; refresh(); } });
  const charts = h('div', { class: 'charts' });
  const el = h('div', { class: 'sub', 'data-testid': 'traffic-endpoint', 'data-endpoint': name },
    h('div', { class: 'row' }, h('h3', {}, name), h('span', { class: 'spacer' }),
      h('label', { class: 'muted' }, 'latency: ', select)), charts);
  el._parts = { select, charts };
  return el;
}
function fillTrafficBlock(el, name, traffic) {
  const { select, charts } = el._parts;
  const bucket = isNum(traffic.bucket_seconds) && traffic.bucket_seconds > 0 ? traffic.bucket_seconds : 10;
  const ep = state.endpoints.get(name);
  const shadows = new Set(ep ? (ep.served_models || []).filter(isShadow).map((m) => m.name) : []);
  const series = (traffic.series || []).filter((se) => se.endpoint === name);
  const models = series.map((se) => se.served_model);
  let view = state.latencyView[name] || '';
  if (view && !models.includes(view)) view = state.latencyView[name] = '';
  syncSelect(select, [['', 'p50 / p99 per model'], ...models.map((m) => [m, `${m}: p50 / p90 / p99`])], view);
  const mk = (se, f) => (se.points || []).map((p) => [p.t_ms, f(p)]);
  const legendOf = (m) => (shadows.has(m) ? `${m} (shadow)` : m);
  const rate = series.map((se) => ({ label: se.served_model, legend: legendOf(se.served_model), color: colorOf(name, se.served_model),
    points: mk(se, (p) => (isNum(p.requests) ? p.requests / bucket : null)) }));
  const errs = series.map((se) => ({ label: se.served_model, legend: legendOf(se.served_model), color: colorOf(name, se.served_model),
    points: mk(se, (p) => (isNum(p.requests) && p.requests > 0 && isNum(p.errors) ? p.errors / p.requests : null)) }));
  let lat;
  if (!view) {
    lat = series.flatMap((se) => [
      { label: `${se.served_model} p99`, color: colorOf(name, se.served_model), points: mk(se, (p) => p.p99_ms) },
      { label: `${se.served_model} p50`, color: colorOf(name, se.served_model), dash: '4 3', points: mk(se, (p) => p.p50_ms) }]);
  } else {
    const se = series.find((x) => x.served_model === view);
    lat = [['p50', '#10b981'], ['p90', '#f59e0b'], ['p99', '#ef4444']]
      .map(([q, color]) => ({ label: `${view} ${q}`, color, points: mk(se, (p) => p[q + '_ms']) }));
  }
  const common = (metric) => ({ 'data-testid': 'traffic-chart', 'data-endpoint': name, 'data-metric': metric });
  const range = { x0: traffic.from_ms, x1: traffic.to_ms };
  charts.replaceChildren(
    chartBox('Requests / s', lineChart(common('rate'), Object.assign({ series: rate }, range)), rate),
    chartBox('Error rate', lineChart(common('errors'), Object.assign({ series: errs, yMinMax: 0.01,
      yFmt: (v) => (v * 100).toFixed(v > 0 && v < 0.1 ? 1 : 0) + '%' }, range)), errs),
    chartBox('Latency (ms)' + (view ? ` · ${view}` : ' · solid p99, dashed p50'),
      lineChart(common('latency'), Object.assign({ series: lat }, range)), lat));
}

// ---------------------------------------------------------------- monitoring
async function loadAllMonitors(mons) {
  const c = card('card-monitoring');
  if (mons.err) {
    if (mons.err.status === 404) {
      setMsg(c.msg, 'no monitors configured'); c.body.classList.remove('stale'); keyed(c.body, [], null);
      renderAlerts([], 'no monitors configured');
    } else {
      setMsg(c.msg, 'Could not load monitors — ' + errText(mons.err), true); c.body.classList.add('stale');
      renderAlerts(null, 'Could not load monitors — ' + errText(mons.err));
    }
    return;
  }
  const names = (mons.ok.monitors || []).map(String);
  setMsg(c.msg, names.length ? '' : 'no monitors configured');
  c.body.classList.remove('stale');
  keyed(c.body, names, makeMonitorBlock);
  const results = await Promise.all(names.map((n) => loadMonitor(n).catch((e) => ({ error: e }))));
  renderAlerts(names.map((n, i) => Object.assign({ name: n }, results[i])), names.length ? '' : 'no monitors configured');
}
function monBlock(name) {
  const el = Array.from(card('card-monitoring').body.children).find((x) => x.dataset.key === name);
  return el ? el._b : null;
}
function makeMonitorBlock(name) {
  const b = { name, seq: 0, hseq: 0 };
  b.gran = h('select', { 'data-testid': 'granularity-select', 'data-endpoint': name,
    onchange: () => { state.granularity[name] = b.gran.value; loadMonitor(name); } });
  b.refreshBtn = h('button', { 'data-testid': 'monitor-refresh', 'data-endpoint': name, onclick: () => refreshMonitor(b) }, 'Refresh now');
  b.refreshMsg = h('span', { class: 'muted', 'data-testid': 'monitor-refresh-result', 'data-endpoint': name });
  b.info = h('div', { class: 'row' });
  b.lastError = note('', true, { 'data-testid': 'monitor-last-error', 'data-endpoint': name });
  b.msg = note('', false);
  b.drift = h('div', {}); b.hist = h('div', {}); b.profile = h('div', {});
  b.el = h('div', { class: 'sub', 'data-testid': 'monitor', 'data-endpoint': name },
    h('div', { class: 'row' }, h('h3', {}, name), h('label', { class: 'muted' }, 'granularity: ', b.gran), b.refreshBtn, b.refreshMsg),
    b.info, b.lastError, b.msg,
    h('h4', {}, 'Drift vs baseline (PSI, KS statistic) · click a feature for its histogram'), b.drift,
    h('h4', {}, 'Baseline vs current distribution'), b.hist,
    h('h4', {}, 'Profile over time (mean)'), b.profile);
  b.el._b = b;
  return b.el;
}
async function refreshMonitor(b) {
  b.refreshBtn.disabled = true;
  b.refreshMsg.textContent = 'refreshing…';
  try {
    const r = await api(`/monitors/${enc(b.name)}/refresh`, { method: 'POST' });
    const rep = r.refresh && typeof r.refresh === 'object' ? r.refresh : {};
    const parts = [['new files', rep.new_files], ['windows', rep.windows_recomputed], ['rows read', rep.rows_read]]
      .filter(([, v]) => isNum(v)).map(([k, v]) => `${k} ${fmtInt(v)}`);
    if (isNum(rep.duration_ms)) parts.push(fmtMs(rep.duration_ms));
    b.refreshMsg.textContent = `refreshed at ${fmtClock(new Date())}` + (parts.length ? ` · ${parts.join(', ')}` : '');
    b.refreshMsg.className = 'muted';
  } catch (e) {
    b.refreshMsg.textContent = 'refresh failed — ' + errText(e);
    b.refreshMsg.className = 'bad';
  } finally {
    b.refreshBtn.disabled = false;
  }
  refresh();
}
async function loadMonitor(name) {
  const b = monBlock(name);
  if (!b) return {};
  const seq = ++b.seq;
  let detail;
  try {
    detail = await api(`/monitors/${enc(name)}`);
  } catch (e) {
    if (seq === b.seq) { setMsg(b.msg, 'Could not load the monitor — ' + errText(e), true); b.el.classList.add('stale'); }
    return { error: e };
  }
  if (seq !== b.seq) return { detail };
  b.el.classList.remove('stale');
  fillMonitorHeader(b, detail);
  const grans = (detail.granularities || []).map(String);
  let g = state.granularity[name];
  if (!grans.includes(g)) g = state.granularity[name] = grans[0];
  syncSelect(b.gran, grans.map((x) => [x, x]), g);
  if (!g) { setMsg(b.msg, 'the monitor has no granularities'); return { detail }; }
  let series;
  try {
    series = await api(`/monitors/${enc(name)}/series?granularity=${enc(g)}&windows=48`);
  } catch (e) {
    if (seq === b.seq) setMsg(b.msg, 'Could not load metric series — ' + errText(e), true);
    return { detail };
  }
  if (seq !== b.seq) return { detail };
  setMsg(b.msg, '');
  renderMonitorCharts(b, series);
  await loadHistogram(name);
  return { detail };
}
function fillMonitorHeader(b, d) {
  b.info.replaceChildren(
    kv('table', str(d.table)), kv('baseline', str(d.baseline)), kv('refreshes', fmtInt(d.refreshes)),
    kv('last refresh', withAgo(d.last_refresh), { 'data-testid': 'monitor-last-refresh', 'data-endpoint': b.name }),
    d.refreshing ? badge('refreshing…', 'blue') : '');
  b.lastError.textContent = d.last_error ? 'last error: ' + d.last_error : '';
}
function renderMonitorCharts(b, series) {
  const name = b.name;
  const profile = (series.profile || []).filter((r) => r.column_name !== ':table');
  const drift = (series.drift || []).filter((r) => r.column_name !== ':table');
  const allX = [...profile, ...drift].map((r) => r.window_ms).filter(isNum);
  const x0 = Math.min(...allX), x1 = Math.max(...allX);
  const xFmt = windowFmt(isFinite(x1 - x0) ? x1 - x0 : 0);
  const byWindow = (a, c) => a.window_ms - c.window_ms;
  const cols = uniq([...profile, ...drift].map((r) => String(r.column_name))).map((col) => {
    const rows = drift.filter((r) => r.column_name === col && r.drift_type === 'BASELINE' && r.model_id == null).sort(byWindow);
    return { col, rows, last: rows[rows.length - 1] };
  });
  // A column drifts when its PSI reaches 0.2 (Lakehouse Monitoring's "significant change") or its
  // test's p-value is below 0.05 shared among the columns tested (Bonferroni): with no drift at
  // all, a window flags some column about 5% of the time, not 5% per column.
  const pOf = (r) => (isNum(r.ks_pvalue) ? r.ks_pvalue : r.chi_squared_pvalue);
  const alpha = 0.05 / Math.max(1, cols.filter((c) => c.last && isNum(pOf(c.last))).length);
  for (const c of cols) {
    c.drifted = !!c.last && ((isNum(c.last.population_stability_index) && c.last.population_stability_index >= 0.2) ||
      (isNum(pOf(c.last)) && pOf(c.last) < alpha));
  }
  cols.sort((a, c) => (c.drifted - a.drifted) || a.col.localeCompare(c.col));
  if (!cols.length) {
    b.drift.replaceChildren(note('no metrics computed yet for this granularity'));
    b.profile.replaceChildren(); b.hist.replaceChildren();
    state.column[name] = undefined;
    return;
  }
  if (!cols.some((c) => c.col === state.column[name])) state.column[name] = cols[0].col;
  const range = { x0, x1, xFmt, xTicks: 3, w: 260, h: 110, yTicks: 3 };
  const select = (col) => {
    state.column[name] = col;
    for (const t of b.el.querySelectorAll('.tile')) t.classList.toggle('selected', t.dataset.column === col);
    loadHistogram(name);
  };
  const tile = (col, drifted, kids) => h('div', { class: 'tile' + (drifted ? ' drifted' : '') + (col === state.column[name] ? ' selected' : ''),
    'data-column': col, title: `show the histogram of ${col}`, onclick: () => select(col) }, kids);
  b.drift.replaceChildren(h('div', { class: 'tiles' }, cols.map(({ col, rows, last, drifted }) => {
    const lines = [{ label: 'PSI', color: '#2563eb', points: rows.map((r) => [r.window_ms, r.population_stability_index]) }];
    if (rows.some((r) => isNum(r.ks_statistic))) lines.push({ label: 'KS statistic', color: '#f59e0b', points: rows.map((r) => [r.window_ms, r.ks_statistic]) });
    // PSI per model version (dashed), when the monitor groups by model
    const perModel = drift.filter((r) => r.column_name === col && r.drift_type === 'BASELINE' && r.model_id != null);
    uniq(perModel.map((r) => String(r.model_id))).sort().forEach((m, i) => lines.push({
      label: `PSI ${m}`, color: PALETTE[(i + 2) % PALETTE.length], dash: '4 3',
      points: perModel.filter((r) => String(r.model_id) === m).sort(byWindow).map((r) => [r.window_ms, r.population_stability_index]) }));
    return tile(col, drifted, [
      h('div', { class: 'title' }, col, drifted ? badge('drift', 'red', { 'data-testid': 'drift-flag', 'data-column': col, 'data-endpoint': name }) : null,
        h('span', { class: 'muted plain' }, last ? `PSI ${fmtNum(last.population_stability_index)} · KS p ${fmtP(last.ks_pvalue)}` : 'no baseline drift')),
      lineChart({ 'data-testid': 'drift-chart', 'data-column': col, 'data-endpoint': name, 'data-drifted': String(drifted) },
        Object.assign({ series: lines, threshold: 0.2, yMinMax: 0.25 }, range)),
      legend(lines)]);
  })));
  b.profile.replaceChildren(h('div', { class: 'tiles' }, cols.map(({ col, drifted }) => {
    const rows = profile.filter((r) => r.column_name === col).sort(byWindow);
    const groups = uniq(rows.map((r) => (r.model_id == null ? '' : String(r.model_id)))).sort();
    const lines = groups.map((g, i) => ({ label: g === '' ? 'all models' : g, color: PALETTE[i % PALETTE.length], dash: g === '' ? undefined : '4 3',
      points: rows.filter((r) => (r.model_id == null ? '' : String(r.model_id)) === g).map((r) => [r.window_ms, r.avg]) }));
    const last = rows.filter((r) => r.model_id == null).pop();
    return tile(col, drifted, [
      h('div', { class: 'title' }, col, h('span', { class: 'muted plain' },
        last ? `mean ${fmtNum(last.avg)} · n ${fmtInt(last.count)} · null ${fmtPct(last.percent_null)}` : '')),
      lineChart({ 'data-testid': 'profile-chart', 'data-column': col, 'data-endpoint': name }, Object.assign({ series: lines }, range)),
      lines.length > 1 ? legend(lines) : null]);
  })));
}
async function loadHistogram(name) {
  const b = monBlock(name);
  if (!b) return;
  const col = state.column[name], g = state.granularity[name];
  const seq = ++b.hseq;
  if (!col || !g) { b.hist.replaceChildren(note('select a feature to see its histogram')); return; }
  try {
    const hd = await api(`/monitors/${enc(name)}/histogram?column=${enc(col)}&granularity=${enc(g)}`);
    if (seq !== b.hseq) return;
    const items = [{ color: '#2563eb', label: 'current' }];
    if (Array.isArray(hd.baseline)) items.unshift({ color: '#94a3b8', label: 'baseline' });
    b.hist.replaceChildren(h('div', { class: 'chart narrow' },
      h('div', { class: 'title' }, col, h('span', { class: 'muted plain' },
        `window ${fmtDateTime(hd.window_ms)} · shares of rows` + (Array.isArray(hd.baseline) ? '' : ' · no baseline'))),
      histogramSvg(name, col, hd), legend(items)));
  } catch (e) {
    if (seq !== b.hseq) return;
    b.hist.replaceChildren(e.status === 404
      ? note(`nothing to draw for ${col}: ${e.message}`, false, { 'data-testid': 'histogram-empty', 'data-column': col })
      : note(`Could not load the histogram of ${col} — ${errText(e)}`, true));
  }
}

// ---------------------------------------------------------------- alerts
function renderAlerts(results, message) {
  const c = card('card-alerts');
  if (!results) { setMsg(c.msg, message, true); c.body.classList.add('stale'); return; }
  c.body.classList.remove('stale');
  const failed = results.filter((r) => r.error).map((r) => `${r.name}: ${errText(r.error)}`);
  const rows = results.filter((r) => r.detail).flatMap((r) => (r.detail.alerts || []).map((a) => [r.name, a]));
  setMsg(c.msg, failed.length ? 'Could not load ' + failed.join('; ') : message || (rows.length ? '' : 'no alert rules'), failed.length > 0);
  if (!rows.length) { c.body.replaceChildren(); return; }
  rows.sort((x, y) => (y[1].firing === true) - (x[1].firing === true));
  c.body.replaceChildren(h('table', {},
    h('tr', {}, ['Endpoint', 'Alert', 'Rule', 'State', 'Value', 'Since', 'Notified (sent / failed)'].map((t) => h('th', {}, t))),
    rows.map(([ep, a]) => {
      const r = a.rule || {};
      const rule = `${str(r.metric)}${r.column ? ' ' + r.column : ''} ${str(r.op)} ${fmtNum(r.threshold, 4)}` + (r.granularity ? `, ${r.granularity}` : '');
      return h('tr', { 'data-testid': 'alert-row', 'data-endpoint': ep, 'data-alert': str(a.name), 'data-state': a.firing ? 'firing' : 'ok' },
        h('td', {}, ep), h('td', {}, str(a.name)), h('td', {}, rule),
        h('td', {}, a.firing ? badge('firing', 'red') : badge('ok', 'green')),
        h('td', { class: 'num' }, fmtNum(a.value, 4)),
        h('td', { title: a.window_start ? `window ${fmtDateTime(a.window_start)}` : '' }, withAgo(a.since)),
        h('td', { class: 'num' }, `${fmtInt(a.notifications_sent)} / `, h('span', { class: a.notifications_failed > 0 ? 'bad' : '' }, fmtInt(a.notifications_failed))));
    })));
}

// ---------------------------------------------------------------- rollouts
const PHASE_COLOR = { progressing: 'blue', paused: 'amber', promoted: 'green', rolled_back: 'red', aborted: 'red' };
function renderRollouts(res) {
  const c = card('card-rollouts');
  if (res.err && res.err.status !== 404) { setMsg(c.msg, 'Could not load rollouts — ' + errText(res.err), true); c.body.classList.add('stale'); return; }
  c.body.classList.remove('stale');
  const list = res.ok ? res.ok.rollouts || [] : [];
  setMsg(c.msg, list.length ? '' : res.err ? 'no rollouts configured' : 'no rollouts');
  c.body.replaceChildren(...list.map(rolloutEl));
}
function rolloutEl(r) {
  const steps = Array.isArray(r.steps) ? r.steps : [];
  const terminal = r.phase === 'promoted';
  const events = (r.events || []).slice().sort((a, b) => (toDate(b.time) || 0) - (toDate(a.time) || 0)).slice(0, 10);
  return h('div', { class: 'sub', 'data-testid': 'rollout', 'data-endpoint': str(r.endpoint), 'data-phase': str(r.phase) },
    h('div', { class: 'row' }, h('h3', {}, str(r.endpoint)),
      badge(str(r.phase).replace('_', ' '), PHASE_COLOR[r.phase] || '', { 'data-testid': 'rollout-phase' }),
      h('span', {}, 'candidate ', h('b', {}, str(r.candidate)), ' vs incumbent ', h('b', {}, str(r.incumbent))),
      kv('candidate at', fmtPct(r.candidate_percent), { 'data-testid': 'rollout-percent' })),
    h('div', { class: 'steps', 'data-testid': 'rollout-steps', 'data-phase': str(r.phase), 'data-step': str(r.step) },
      steps.map((p, i) => {
        const cls = terminal || i < r.step ? 'done' : i === r.step ? 'current' : '';
        return h('div', { class: 'step ' + cls, 'data-testid': 'rollout-step', 'data-current': String(i === r.step) },
          i === 0 && p === 0 ? 'shadow' : fmtNum(p) + '%');
      })),
    r.waiting ? h('div', { class: 'muted', 'data-testid': 'rollout-waiting' }, 'waiting: ' + r.waiting) : null,
    r.updated ? h('div', { class: 'muted' }, 'updated ' + withAgo(r.updated)) : null,
    (r.last_checks || []).length ? h('table', {},
      h('tr', {}, ['Check', '', 'Value', 'Threshold', 'Detail'].map((t) => h('th', {}, t))),
      r.last_checks.map((ch) => h('tr', { 'data-testid': 'rollout-check', 'data-check': str(ch.name), 'data-passed': String(!!ch.passed) },
        h('td', {}, str(ch.name)), h('td', { class: ch.passed ? 'ok' : 'bad' }, ch.passed ? '✓' : '✗'),
        h('td', { class: 'num' }, fmtNum(ch.value, 4)), h('td', { class: 'num' }, fmtNum(ch.threshold, 4)), h('td', { class: 'muted' }, str(ch.detail)))))
      : h('div', { class: 'muted' }, 'no checks yet'),
    h('ul', { class: 'events' }, events.map((ev) => h('li', { 'data-testid': 'rollout-event' },
      h('span', { class: 'muted' }, fmtDateTime(ev.time)), ' ', badge(str(ev.event)), ' ',
      isNum(ev.candidate_percent) ? `${fmtPct(ev.candidate_percent)} · ` : '', str(ev.message)))));
}

// ---------------------------------------------------------------- experiments
function verdictColor(v) {
  const t = String(v || '').toLowerCase();
  return /better/.test(t) ? 'green' : /worse/.test(t) ? 'red' : /not enough/.test(t) ? 'amber' : '';
}
async function loadExperiments(names, epErr) {
  const c = card('card-experiments');
  if (!names) { setMsg(c.msg, 'Endpoints unavailable — ' + errText(epErr), true); c.body.classList.add('stale'); return; }
  const results = await Promise.all(names.map((n) => api(`/experiments/${enc(n)}`).then((ok) => ({ n, ok }), (err) => ({ n, err }))));
  c.body.classList.remove('stale');
  setMsg(c.msg, names.length ? '' : 'no endpoints');
  c.body.replaceChildren(...results.map(({ n, ok, err }) => {
    if (err && err.status === 400) return h('div', { class: 'sub muted', 'data-testid': 'experiment-none', 'data-endpoint': n }, `${n}: no inference table`);
    if (err) return h('div', { class: 'sub' }, h('h3', {}, n), note('Could not load the experiment — ' + errText(err), true));
    return experimentEl(n, ok);
  }));
}
function experimentEl(n, x) {
  const m = x.metric || {};
  const srm = x.srm || {};
  return h('div', { class: 'sub', 'data-testid': 'experiment', 'data-endpoint': n },
    h('div', { class: 'row' }, h('h3', {}, n), kv('champion', str(x.champion)),
      kv('metric', `${str(m.name)} (${str(m.test)}, ${m.higher_is_better === false ? 'lower' : 'higher'} is better)`),
      kv('alpha', fmtNum(x.alpha)), kv('requests', fmtInt(x.requests)),
      kv('window', `${fmtDateTime(x.from)} → ${fmtDateTime(x.to)}`)),
    h('table', {},
      h('tr', {}, ['Served model', 'Requests', 'Share / expected', 'Configured', 'Error rate', 'p50', 'p99', 'Metric [CI]', 'Δ vs champion [CI]', 'p-value', 'Verdict']
        .map((t, i) => h('th', { class: i > 0 && i < 10 ? 'num' : '' }, t))),
      (x.arms || []).map((a) => {
        const vs = a.vs_champion, am = a.metric || {}, lat = a.latency_ms || {};
        const off = isNum(a.share) && isNum(a.expected_share) && Math.abs(a.share - a.expected_share) > 0.05;
        return h('tr', { 'data-testid': 'experiment-arm', 'data-model': str(a.served_model) },
          h('td', {}, str(a.served_model), a.is_champion ? ' ' : null, a.is_champion ? badge('champion', 'blue') : null),
          h('td', { class: 'num' }, fmtInt(a.requests)),
          h('td', { class: 'num' + (off ? ' warn' : '') }, `${fmtFrac(a.share)} / ${fmtFrac(a.expected_share)}`),
          h('td', { class: 'num' }, fmtPct(a.configured_percent)),
          h('td', { class: 'num' }, fmtFrac(a.error_rate), h('span', { class: 'muted' }, ` (${fmtInt(a.errors)})`)),
          h('td', { class: 'num' }, fmtMs(lat.p50)), h('td', { class: 'num' }, fmtMs(lat.p99)),
          h('td', { class: 'num' }, fmtNum(am.value, 4), ' ', h('span', { class: 'muted' }, fmtCi(am.ci)), h('span', { class: 'muted' }, ` n=${fmtInt(am.n)}`)),
          h('td', { class: 'num' }, vs ? [fmtNum(vs.diff, 3), ' ', h('span', { class: 'muted' }, fmtCi(vs.diff_ci))] : DASH),
          h('td', { class: 'num' }, vs ? fmtP(vs.p_value) : DASH),
          h('td', {}, vs ? badge(str(vs.verdict), verdictColor(vs.verdict), { 'data-testid': 'experiment-verdict' }) : a.is_champion ? h('span', { class: 'muted' }, 'champion') : DASH));
      })),
    h('div', { 'data-testid': 'experiment-srm', 'data-flagged': String(!!srm.flagged), class: (srm.flagged ? 'note error' : 'muted') + ' gap-top' },
      srm.flagged ? '⚠ Sample ratio mismatch: the observed split differs from the configured one. ' : 'Sample ratio: consistent with the configured split. ',
      `χ² ${fmtNum(srm.statistic)} · p ${fmtP(srm.p_value)}`),
    (x.shadows || []).length ? h('table', { class: 'gap-top' },
      h('tr', {}, ['Shadow', 'Primary', 'Rows', 'Agreement', 'Mean |diff|'].map((t, i) => h('th', { class: i > 1 ? 'num' : '' }, t))),
      x.shadows.map((sh) => {
        const o = sh.overall || {};
        return h('tr', { 'data-testid': 'experiment-shadow', 'data-model': str(sh.shadow) },
          h('td', {}, str(sh.shadow)), h('td', {}, str(sh.primary)), h('td', { class: 'num' }, fmtInt(o.rows)),
          h('td', { class: 'num' }, fmtFrac(o.agreement_rate)), h('td', { class: 'num' }, fmtNum(o.mean_abs_diff, 4)));
      })) : null,
    (x.warnings || []).length ? h('ul', { class: 'warn' }, x.warnings.map((w) => h('li', { 'data-testid': 'experiment-warning' }, str(w)))) : null);
}

// ---------------------------------------------------------------- config history
async function loadHistory(names, epErr) {
  const c = card('card-history');
  if (!names) { setMsg(c.msg, 'Endpoints unavailable — ' + errText(epErr), true); c.body.classList.add('stale'); return; }
  const results = await Promise.all(names.map((n) => api(`/admin/endpoints/${enc(n)}/history`).then((ok) => ({ n, ok }), (err) => ({ n, err }))));
  c.body.classList.remove('stale');
  setMsg(c.msg, names.length ? '' : 'no endpoints');
  c.body.replaceChildren(...results.map(({ n, ok, err }) => {
    if (err) return h('div', { class: 'sub' }, h('h3', {}, n), note('Could not load the history — ' + errText(err), true));
    const hist = (ok.history || []).slice().sort((a, b) => (b.version || 0) - (a.version || 0)).slice(0, 10);
    return h('div', { class: 'sub', 'data-testid': 'history', 'data-endpoint': n }, h('h3', {}, n),
      hist.length ? h('table', {},
        h('tr', {}, ['Version', 'Time', 'Source', 'Reason', 'Routes'].map((t) => h('th', {}, t))),
        hist.map((e) => {
          const routes = e.config && e.config.traffic_config && e.config.traffic_config.routes;
          const text = Array.isArray(routes) && routes.length
            ? routes.map((r) => `${str(r.served_model_name)} ${str(r.traffic_percentage)}`).join(' / ') : DASH;
          return h('tr', { 'data-testid': 'history-row', 'data-endpoint': n, 'data-version': str(e.version) },
            h('td', {}, 'v' + str(e.version)), h('td', {}, fmtDateTime(e.time)),
            h('td', {}, badge(str(e.source), e.source === 'rollback' ? 'amber' : e.source === 'rollout' ? 'blue' : '')),
            h('td', {}, str(e.reason)), h('td', {}, text));
        })) : note('no history'));
  }));
}

// ---------------------------------------------------------------- refresh cycle
function guard(cardId, fn) {
  try {
    const r = fn();
    return r && r.catch ? r.catch((e) => renderFailed(cardId, e)) : r;
  } catch (e) {
    renderFailed(cardId, e);
  }
}
function renderFailed(cardId, e) {
  console.error(e);
  setMsg(card(cardId).msg, 'Could not render this section — ' + errText(e), true);
}
const settle = (p) => p.then((ok) => ({ ok }), (err) => ({ err }));
async function cycle() {
  state.saw401 = false;
  const [eps, traffic, mons, rolls] = await Promise.all([
    settle(api('/admin/endpoints')), settle(api(`/dashboard/api/traffic?minutes=${TRAFFIC_MINUTES}`)),
    settle(api('/monitors')), settle(api('/rollouts'))]);
  const epList = eps.ok ? (eps.ok.endpoints || []) : null;
  if (epList) state.endpoints = new Map(epList.map((e) => [e.name, e]));
  guard('card-endpoints', () => renderEndpoints(epList, traffic.ok, eps.err));
  guard('card-traffic', () => renderTraffic(epList || Array.from(state.endpoints.values()), traffic.ok, traffic.err));
  guard('card-rollouts', () => renderRollouts(rolls));
  const names = epList ? epList.map((e) => e.name) : null;
  await Promise.all([
    guard('card-monitoring', () => loadAllMonitors(mons)),
    guard('card-experiments', () => loadExperiments(names, eps.err)),
    guard('card-history', () => loadHistory(names, eps.err))]);
  document.getElementById('last-updated').textContent = fmtClock(new Date());
  updateTokenBox();
  state.renders += 1;
  document.body.dataset.renders = String(state.renders);
  document.body.dataset.loaded = 'true';
}
function schedule() {
  clearTimeout(state.timer);
  if (state.auto) state.timer = setTimeout(refresh, REFRESH_MS);
}
function refresh() {
  if (state.cycle) { state.again = true; return state.cycle; }
  clearTimeout(state.timer);
  state.cycle = cycle().catch((e) => console.error(e)).finally(() => {
    state.cycle = null;
    if (state.again) { state.again = false; refresh(); } else schedule();
  });
  return state.cycle;
}

const autoBox = document.querySelector('[data-testid=auto-refresh]');
autoBox.addEventListener('change', () => { state.auto = autoBox.checked; if (state.auto) refresh(); else clearTimeout(state.timer); });
document.querySelector('[data-testid=refresh-now]').addEventListener('click', () => refresh());
refresh();
