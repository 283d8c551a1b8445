// Sluice dashboard: drawing. Formatting, DOM builders and the SVG charts (lines, split bars,
// histograms); no state and no API calls: app.js owns those and passes data in.
// An ES module served as /dashboard/charts.js; no build step, no dependencies.

export const PALETTE = ['#2563eb', '#f59e0b', '#10b981', '#ef4444', '#8b5cf6', '#06b6d4', '#ec4899', '#84cc16', '#64748b'];
const SVGNS = 'http://www.w3.org/2000/svg';
export const DASH = '–';

// ---------------------------------------------------------------- formatting
export const isNum = (v) => typeof v === 'number' && isFinite(v);
export const str = (v) => (v === null || v === undefined || v === '' ? DASH : String(v));
export function fmtNum(v, digits = 3) {
  if (!isNum(v)) return DASH;
  if (Math.abs(v) >= 1000) return v.toLocaleString('en-US', { maximumFractionDigits: 1 });
  if (Number.isInteger(v)) return String(v);
  return String(Number(v.toPrecision(digits)));
}
export const fmtInt = (v) => (isNum(v) ? Math.round(v).toLocaleString('en-US') : DASH);
export const fmtPct = (v) => (isNum(v) ? v.toFixed(1) + '%' : DASH);          // v already in percent
export const fmtFrac = (v) => (isNum(v) ? (v * 100).toFixed(1) + '%' : DASH); // v in 0..1
export const fmtP = (v) => (!isNum(v) ? DASH : v < 0.001 ? v.toExponential(2) : v.toFixed(3));
export const fmtMs = (v) => (isNum(v) ? v.toFixed(2) + ' ms' : DASH);
export const fmtCi = (ci, f = fmtNum) => (Array.isArray(ci) && ci.length === 2 ? `[${f(ci[0])}, ${f(ci[1])}]` : '');
const pad = (n) => String(n).padStart(2, '0');
export function toDate(t) {
  if (t === null || t === undefined || t === '') return null;
  const d = t instanceof Date ? t : new Date(t);
  return isNaN(d.getTime()) ? null : d;
}
export function fmtClock(t) {
  const d = toDate(t);
  return d ? `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}` : DASH;
}
export function fmtDateTime(t) {
  const d = toDate(t);
  return d ? `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${fmtClock(d)}` : DASH;
}
function fmtAgo(t) {
  const d = toDate(t);
  if (!d) return '';
  const s = Math.round((Date.now() - d.getTime()) / 1000);
  if (s < 0) return '';
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return `${Math.floor(s / 86400)}d ago`;
}
export const withAgo = (t) => (toDate(t) ? `${fmtDateTime(t)} (${fmtAgo(t)})` : DASH);
export function windowFmt(span) {
  return (t) => {
    const d = toDate(t);
    if (!d) return DASH;
    return span >= 2 * 86400e3 ? `${pad(d.getMonth() + 1)}-${pad(d.getDate())}` : `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  };
}

// ---------------------------------------------------------------- DOM helpers (no innerHTML anywhere)
// No style attributes either: the page's Content-Security-Policy takes styles from style.css
// only, so a computed style (a series colour) is set through the CSSOM, see `swatch`.
function build(el, attrs, kids) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const kid of kids.flat(Infinity)) {
    if (kid === null || kid === undefined || kid === false) continue;
    el.appendChild(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return el;
}
export const h = (tag, attrs, ...kids) => build(document.createElement(tag), attrs, kids);
export const s = (tag, attrs, ...kids) => build(document.createElementNS(SVGNS, tag), attrs, kids);
export const badge = (text, color, attrs) => h('span', Object.assign({ class: 'badge ' + (color || '') }, attrs || {}), text);
export const kv = (label, value, attrs) => h('span', Object.assign({ class: 'kv' }, attrs || {}), label + ': ', h('b', {}, value));
export const note = (text, isError, attrs) => h('div', Object.assign({ class: isError ? 'note error' : 'note' }, attrs || {}), text);
export const uniq = (xs) => Array.from(new Set(xs));
/** A small square in `color` (set through the CSSOM, which the CSP allows). */
export function swatch(color) {
  const el = h('span', { class: 'swatch' });
  el.style.background = color;
  return el;
}


export const isShadow = (m) => m && m.mirror_percent !== undefined && m.mirror_percent !== null;
export function niceStep(range, n) {
  const raw = range / n;
  const p = Math.pow(10, Math.floor(Math.log10(raw)));
  const m = raw / p;
  return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
}
export function legend(items) {
  return h('div', { class: 'legend' }, items.map((it) =>
    h('span', {}, swatch(it.color), it.label)));
}

/**
 * Line chart. o.series: [{label, color, dash?, points: [[x, y|null]]}]; gaps on null.
 * Each series is one <path data-series data-points>; isolated points also get a dot.
 */
export function lineChart(attrs, o) {
  const W = o.w || 360, H = o.h || 140, L = 42, R = 10, T = 8, B = 18;
  const ys = o.series.flatMap((se) => se.points.map((p) => p[1]).filter(isNum));
  const xs = o.series.flatMap((se) => se.points.map((p) => p[0])).filter(isNum);
  let x0 = isNum(o.x0) ? o.x0 : Math.min(...xs), x1 = isNum(o.x1) ? o.x1 : Math.max(...xs);
  if (!isFinite(x0) || !isFinite(x1)) { x1 = Date.now(); x0 = x1 - 3600e3; }
  if (x1 <= x0) { x0 -= 60e3; x1 += 60e3; }
  let lo = Math.min(0, ...ys), hi = Math.max(o.yMinMax || 0, o.threshold || 0, ...ys);
  if (!(hi > lo)) hi = lo + 1;
  const step = niceStep(hi - lo, o.yTicks || 4);
  const top = Math.ceil(hi / step - 1e-9) * step, bot = Math.floor(lo / step + 1e-9) * step;
  const sx = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const sy = (y) => T + ((top - y) / (top - bot)) * (H - T - B);
  const yFmt = o.yFmt || ((v) => fmtNum(v));
  const xFmt = o.xFmt || fmtClock;
  const svg = s('svg', Object.assign({ viewBox: `0 0 ${W} ${H}`, role: 'img' }, attrs));
  const nY = Math.round((top - bot) / step);
  for (let i = 0; i <= nY; i++) {
    const v = bot + i * step, y = sy(v).toFixed(1);
    svg.append(s('line', { x1: L, x2: W - R, y1: y, y2: y, stroke: i === 0 ? '#cbd5e1' : '#eef1f5' }),
      s('text', { x: L - 4, y: +y + 3, 'text-anchor': 'end' }, yFmt(v)));
  }
  const nX = o.xTicks || 4;
  for (let i = 0; i < nX; i++) {
    const t = x0 + (i * (x1 - x0)) / (nX - 1);
    const anchor = i === 0 ? 'start' : i === nX - 1 ? 'end' : 'middle';
    svg.append(s('text', { x: sx(t).toFixed(1), y: H - 4, 'text-anchor': anchor }, xFmt(t)));
  }
  if (isNum(o.threshold)) {
    const y = sy(o.threshold).toFixed(1);
    svg.append(s('line', { x1: L, x2: W - R, y1: y, y2: y, stroke: '#f87171', 'stroke-dasharray': '4 3' },
      s('title', {}, `threshold ${o.threshold}`)));
  }
  for (const se of o.series) {
    let d = '', n = 0, pen = false;
    const dots = [];
    const pts = se.points;
    pts.forEach((p, i) => {
      if (!isNum(p[1]) || !isNum(p[0])) { pen = false; return; }
      const X = sx(p[0]).toFixed(1), Y = sy(p[1]).toFixed(1);
      d += (pen ? 'L' : 'M') + X + ' ' + Y;
      n++;
      const prevOk = i > 0 && isNum(pts[i - 1][1]), nextOk = i + 1 < pts.length && isNum(pts[i + 1][1]);
      if (!prevOk && !nextOk) dots.push([X, Y]);
      pen = true;
    });
    svg.append(s('path', { d, fill: 'none', stroke: se.color, 'stroke-width': 1.6, 'stroke-linejoin': 'round',
      'stroke-dasharray': se.dash, 'data-series': se.label, 'data-points': n }, s('title', {}, se.label)));
    for (const [X, Y] of dots) svg.append(s('circle', { cx: X, cy: Y, r: 2, fill: se.color }));
  }
  if (!ys.length) svg.append(s('text', { x: (L + W - R) / 2, y: (T + H - B) / 2, 'text-anchor': 'middle' }, 'no data'));
  return svg;
}
export function chartBox(title, svg, series) {
  return h('div', { class: 'chart' }, h('div', { class: 'title' }, title), svg,
    series ? legend(series.map((se) => ({ color: se.color, label: se.legend || se.label }))) : null);
}

/**
 * Two stacked bars: configured split vs observed share of requests.
 * `colorOf(model)` picks a served model's colour.
 */
export function splitChart(ep, observed, colorOf) {
  const W = 440, L = 72, R = 6, BH = 18, span = W - L - R;
  const svg = s('svg', { viewBox: `0 0 ${W} 60`, role: 'img', 'data-testid': 'split-chart', 'data-endpoint': ep.name });
  const configured = (ep.served_models || []).filter((m) => !isShadow(m))
    .map((m) => ({ model: m.name, value: isNum(m.traffic_percentage) ? m.traffic_percentage : 0 }));
  const rows = [['configured', configured, 'no routes'], ['observed', observed.parts, observed.empty]];
  rows.forEach(([kind, parts, emptyText], r) => {
    const y = 4 + r * 28;
    svg.append(s('text', { x: 0, y: y + 13 }, kind));
    const total = parts.reduce((a, p) => a + p.value, 0);
    if (!parts.length || !(total > 0)) {
      svg.append(s('rect', { x: L, y, width: span, height: BH, rx: 3, fill: '#f3f4f6' }),
        s('text', { x: L + span / 2, y: y + 13, 'text-anchor': 'middle' }, emptyText || 'no data'));
      return;
    }
    let x = L;
    for (const p of parts) {
      const pct = (100 * p.value) / total, w = (span * p.value) / total;
      svg.append(s('rect', { x: x.toFixed(2), y, width: w.toFixed(2), height: BH, fill: colorOf(p.model),
        'data-kind': kind, 'data-model': p.model, 'data-percent': pct.toFixed(1) },
        s('title', {}, `${p.model} ${kind}: ${fmtPct(pct)}` + (kind === 'observed' ? ` (${fmtInt(p.value)} requests)` : ''))));
      if (w > 36) svg.append(s('text', { class: 'in', x: (x + w / 2).toFixed(1), y: y + 13, 'text-anchor': 'middle' }, fmtPct(pct)));
      x += w;
    }
  });
  return svg;
}

/** Baseline vs current, both normalised to shares, bars side by side. */
export function histogramSvg(endpoint, col, hd) {
  const W = 380, H = 170, L = 38, R = 6, T = 8;
  const cat = hd.kind === 'categorical';
  const B = cat ? 30 : 18;
  const cur = (hd.current || []).map(Number), base = Array.isArray(hd.baseline) ? hd.baseline.map(Number) : null;
  const share = (arr) => { const t = arr.reduce((a, v) => a + (isNum(v) ? v : 0), 0); return arr.map((v) => (t > 0 && isNum(v) ? v / t : 0)); };
  const cs = share(cur), bs = base ? share(base) : null;
  const k = Math.max(cs.length, bs ? bs.length : 0);
  const edges = hd.edges || [], cats = hd.categories || [];
  const label = (i) => (cat ? str(cats[i]) : `${fmtNum(edges[i])} – ${fmtNum(edges[i + 1])}`);
  const step = niceStep(Math.max(0.01, ...cs, ...(bs || [])), 4);
  const top = Math.ceil(Math.max(0.01, ...cs, ...(bs || [])) / step - 1e-9) * step;
  const sy = (v) => T + ((top - v) / top) * (H - T - B);
  const svg = s('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'data-testid': 'histogram', 'data-column': col, 'data-endpoint': endpoint, 'data-kind': hd.kind });
  for (let v = 0, i = 0; i <= Math.round(top / step); i++, v = i * step) {
    const y = sy(v).toFixed(1);
    svg.append(s('line', { x1: L, x2: W - R, y1: y, y2: y, stroke: i === 0 ? '#cbd5e1' : '#eef1f5' }),
      s('text', { x: L - 4, y: +y + 3, 'text-anchor': 'end' }, (v * 100).toFixed(v * 100 < 10 && v > 0 ? 1 : 0) + '%'));
  }
  const bw = (W - L - R) / Math.max(k, 1);
  for (let i = 0; i < k; i++) {
    const gx = L + i * bw;
    const bars = bs ? [['baseline', bs, base, 0.08], ['current', cs, cur, 0.5]] : [['current', cs, cur, 0.15]];
    for (const [kind, sh, raw, off] of bars) {
      const v = sh[i] || 0, y = sy(v);
      svg.append(s('rect', { x: (gx + bw * off).toFixed(2), y: y.toFixed(1), width: (bw * (bs ? 0.42 : 0.7)).toFixed(2),
        height: Math.max(0, H - B - y).toFixed(1), fill: kind === 'baseline' ? '#94a3b8' : '#2563eb',
        'data-kind': kind, 'data-bin': i, 'data-share': v.toFixed(4) },
        s('title', {}, `${label(i)} · ${kind}: ${fmtFrac(v)} (${fmtInt(raw[i])})`)));
    }
    if (cat && k <= 14) {
      const maxChars = Math.max(3, Math.floor(bw / 6));
      const t = str(cats[i]);
      svg.append(s('text', { x: (gx + bw / 2).toFixed(1), y: H - B + 12, 'text-anchor': 'middle' }, t.length > maxChars ? t.slice(0, maxChars - 1) + '…' : t));
    }
  }
  if (!cat && edges.length > 1) {
    const idx = uniq([0, Math.floor(k / 2), k]);
    idx.forEach((j) => {
      const anchor = j === 0 ? 'start' : j === k ? 'end' : 'middle';
      svg.append(s('text', { x: (L + j * bw).toFixed(1), y: H - 4, 'text-anchor': anchor }, fmtNum(edges[j])));
    });
  }
  return svg;
}
