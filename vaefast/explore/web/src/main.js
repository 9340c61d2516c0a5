// The vaefast explorer page: a client of the documented HTTP API (/api/...) and nothing
// else. The map is drawn by regl-scatterplot; everything else is plain DOM.
import createScatterplot from 'regl-scatterplot';

import { linearScale, labelColours, ramp, rampCss } from './colours.js';
import { drawnSize, gridIndex, nearest } from './hover.js';
import { imageUrl, onCommand, relayed, release, request, tell } from './transport.js';
import { pointsInPolygon, readPoints, rowIndex, readUint16 } from './points.js';

// Points drawn while the view moves: sized after each motion from its frame times to keep
// 6-12 frames/s (software WebGL draws ~30,000 points at ~10 frames/s, a million at ~1.5);
// `#motion=N` in the URL fixes it (0: always all, for a machine with a fast GPU).
let MOTION_POINTS = 30000;
let MOTION_FIXED = false;
const MOTION_FPS = [6, 12];
const MOTION_MIN = 5000;
const REST_MS = 250; // the view is at rest this long after its last change
const $ = (id) => document.getElementById(id);
const TYPES = { zDataType: 'categorical', wDataType: 'continuous' };

// Read-only state for tests (not for features).
const state = {
  ready: false, points: 0, total: 0, rows: null, hovered: null, tooltipRow: null,
  tooltipComplete: false, panelRow: null, selection: [], pinned: [], colour: 'label',
  map: null, fetches: 0, motionFrames: 0, moving: false, planeDecodes: 0,
};
window.vaefastExplorer = state;

const api = (path, options) => request(path, options).then(async (r) => {
  if (!r.ok) throw new Error((await r.json().catch(() => ({}))).error || r.statusText);
  return r;
});
const json = (path, options) => api(path, options).then((r) => r.json());

function hashState() {
  return Object.fromEntries(new URLSearchParams(location.hash.slice(1)));
}

function saveHash(sp) {
  const h = new URLSearchParams({ map: state.map, color: state.colour });
  if (state.colour === 'dim') h.set('dim', $('dim').value);
  const [x, y] = sp.get('cameraTarget');
  h.set('view', [x, y, sp.get('cameraDistance')].map((v) => v.toFixed(5)).join(','));
  if (state.panelRow !== null) h.set('row', state.panelRow);
  h.set('size', $('size').value);
  const { motion } = hashState();
  if (motion !== undefined) h.set('motion', motion);
  if (!relayed) history.replaceState(null, '', `${location.pathname}${location.search}#${h}`);
}

async function main() {
  const meta = await json('/api/meta');
  state.meta = meta;
  const saved = hashState();
  if (/^\d+$/.test(saved.motion || '')) {
    MOTION_POINTS = Number(saved.motion) || Infinity;
    MOTION_FIXED = true;
  }
  setupControls(meta, saved);
  if (meta.inputs_note) banner(meta.inputs_note);
  const canvas = $('map');
  // laid out first: a notebook shows its output before sizing it, and a map drawn at zero
  // size stays collapsed to a point
  while (!canvas.clientWidth || !canvas.clientHeight) {
    await new Promise((resolve) => { requestAnimationFrame(resolve); });
  }
  // regl-scatterplot keeps the scales' domains on the visible data box (after a reset
  // below, and as the view moves)
  const xScale = linearScale([-1, 1], [0, canvas.clientWidth]);
  const yScale = linearScale([-1, 1], [canvas.clientHeight, 0]);
  const sp = createScatterplot({
    canvas, xScale, yScale, pointSize: Number($('size').value),
    opacity: 0.8, lassoInitiator: false,
  });
  state.scatterplot = sp;
  const view = { sp, meta, xScale, yScale, points: null, frameTimes: [] };
  state.toScreen = (x, y) => [xScale(x), yScale(y)]; // data -> canvas pixels
  sp.reset({ preventEvent: true }); // before the points: one full frame, not three
  await loadPoints(view, null);
  finishFrame(sp);
  state.firstFrameMs = performance.now(); // since navigation started
  if (saved.view) {
    const [x, y, d] = saved.view.split(',').map(Number);
    if ([x, y, d].every(Number.isFinite)) sp.set({ cameraTarget: [x, y], cameraDistance: d });
  }
  wireEvents(view);
  if (saved.row !== undefined && /^\d+$/.test(saved.row)) openPanel(view, Number(saved.row));
  state.ready = true;
}

// Reading a pixel back waits until the GPU (or SwiftShader) has finished the frame.
function finishFrame(sp) {
  const gl = sp.get('renderer').regl._gl;
  gl.readPixels(0, 0, 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, new Uint8Array(4));
}
state.finishFrame = () => finishFrame(state.scatterplot);

// The point size a map of n points opens with: 6 px up to 1,000 points, 1.5 px from 1,000,000.
function defaultPointSize(n) {
  const size = 6 - 1.5 * Math.log10(Math.max(n, 1000) / 1000);
  return Math.max(1.5, Math.round(2 * size) / 2); // the slider's steps
}

function setupControls(meta, saved) {
  const mapSel = $('mapsel');
  for (const m of meta.maps) mapSel.add(new Option(meta.map_titles[m], m));
  state.map = meta.maps.includes(saved.map) ? saved.map : meta.maps[0];
  mapSel.value = state.map;
  labelAxes(meta);
  const colour = $('colour');
  if (!meta.labels) colour.querySelector('option[value=label]').remove();
  for (const c of meta.columns) { // the input's own columns: numbers and categories colour
    if (c.kind !== 'text') colour.add(new Option(c.name, `col:${c.name}`));
  }
  const offered = Array.from(colour.options, (o) => o.value);
  state.colour = offered.includes(saved.color) ? saved.color : (meta.labels ? 'label' : 'sigma');
  colour.value = state.colour;
  $('dim').max = meta.z - 1;
  if (saved.dim && /^\d+$/.test(saved.dim) && Number(saved.dim) < meta.z) $('dim').value = saved.dim;
  $('dim').hidden = state.colour !== 'dim';
  // points big enough to hover when there are few, small enough to see structure when many
  $('size').value = saved.size && Number(saved.size) >= 1 ? saved.size : defaultPointSize(meta.drawn);
  $('count').textContent = `${meta.rows.toLocaleString()} rows, Z = ${meta.latent_shape.join('×')}`
    + (meta.skipped ? `, ${meta.skipped} skipped (not drawn)` : '');
  if (meta.skipped) {
    $('skipped').hidden = false;
    $('skipped-list').textContent = meta.skipped_rows.map((s) => `row ${s.row}${s.id ? ` (${s.id})` : ''}: ${s.reason}`).join('\n');
  }
}

function banner(text) {
  const b = $('banner');
  b.textContent = text;
  b.hidden = false;
}

// What a user's action could not do, said on the page (not only in the console) until the
// next action succeeds.
function notice(text) {
  const n = $('notice');
  n.textContent = text;
  n.hidden = !text;
  state.notice = text;
}

let actions = 0; // the notice tells the latest action's outcome, whichever ends first

const guarded = (action) => async (...args) => {
  actions += 1;
  const mine = actions;
  try {
    await action(...args);
    if (mine === actions) notice('');
  } catch (e) {
    if (mine === actions) notice(e.message);
  }
};

// --- points ---------------------------------------------------------------------------

// The names of the map's axes (μ₁/μ₂, t-SNE 1/2, the principal components and the share of
// μ's variance each explains).
function labelAxes(meta) {
  const [x, y] = meta.map_axes?.[state.map] ?? ['', ''];
  $('axis-x').textContent = x;
  $('axis-y').textContent = y;
}

async function loadPoints(view, box) {
  const { meta } = view;
  const q = new URLSearchParams({ map: state.map });
  if (box) box.forEach((v, i) => q.set(['x0', 'y0', 'x1', 'y1'][i], v));
  state.fetches += 1;
  const r = await api(`/api/points?${q}`);
  const pts = readPoints(await r.arrayBuffer(), meta.label_count);
  pts.totalInView = Number(r.headers.get('X-Total-Rows'));
  view.points = pts;
  state.rows = pts.rows;
  state.points = pts.rows.length;
  state.total = pts.totalInView;
  await colourValues(view);
  applyColour(view); // before the draw: a colour set after it redraws every point
  await draw(view);
  view.grid = gridIndex(pts.x, pts.y); // while the frame is drawn
  restoreSelection(view);
}

// The points' colour values for the chosen colour: w (continuous: mean σ, a latent
// dimension, a column of numbers) and z (categories: the label, or a column's values).
async function colourValues(view) {
  const pts = view.points;
  const column = columnOf(view.meta, state.colour);
  pts.w = pts.sigma;
  pts.z = pts.labelZ;
  if (state.colour === 'dim') {
    const { values, range } = await dimension(view);
    pts.w = values;
    view.dimRange = range;
  } else if (column) {
    const q = new URLSearchParams({ map: state.map, name: column.name });
    if (view.box) view.box.forEach((v, i) => q.set(['x0', 'y0', 'x1', 'y1'][i], v));
    const buffer = await (await api(`/api/column?${q}`)).arrayBuffer();
    if (column.kind === 'number') pts.w = readUint16(buffer);
    else pts.z = Float32Array.from(new Uint16Array(buffer));
  }
}

function columnOf(meta, colour) {
  return colour.startsWith('col:') ? meta.columns.find((c) => `col:${c.name}` === colour) : null;
}

async function dimension(view) {
  const q = new URLSearchParams({ map: state.map, dim: $('dim').value });
  const box = view.box;
  if (box) box.forEach((v, i) => q.set(['x0', 'y0', 'x1', 'y1'][i], v));
  const r = await api(`/api/dimension?${q}`);
  const range = r.headers.get('X-Range').split(',').map(Number);
  return { values: readUint16(await r.arrayBuffer()), range };
}

// One draw at a time (regl-scatterplot ignores a draw while the previous one is running):
// each waits for the one before and draws the points as they are by then.
let drawing = Promise.resolve();
function draw(view) {
  drawing = drawing.then(() => {
    const pts = view.points;
    return view.sp.draw({ x: pts.x, y: pts.y, z: pts.z, w: pts.w }, TYPES);
  });
  return drawing;
}

function applyColour(view) {
  const { sp, meta } = view;
  const legend = $('legend');
  legend.replaceChildren();
  const column = columnOf(meta, state.colour);
  if (state.colour === 'label' || column?.kind === 'category') {
    const count = column ? column.values.length : meta.label_count;
    const named = (i) => (column ? column.values[i] : (meta.label_names?.[i] ?? String(i)));
    const colours = labelColours(count);
    sp.set({ colorBy: 'valueA', pointColor: colours.map((c) => c.rgba) });
    colours.forEach((c, i) => {
      if (i === count && !(column ? column.missing : meta.unlabelled)) return;
      const name = i < count ? named(i) : (column ? 'no value' : 'no label');
      const item = document.createElement('span');
      item.className = 'swatch';
      item.innerHTML = `<i style="background:${c.css}"></i>`;
      item.append(name);
      legend.append(item);
    });
  } else {
    sp.set({ colorBy: 'valueB', pointColor: ramp(64) });
    const [lo, hi] = state.colour === 'sigma' ? meta.sigma_range
      : column ? column.range : view.dimRange;
    const what = state.colour === 'sigma' ? 'mean σ' : column ? column.name : `μ[${$('dim').value}]`;
    legend.innerHTML = `<span>${what} ${lo.toFixed(3)}</span><b class="bar" style="background:${rampCss()}"></b><span>${hi.toFixed(3)}</span>`;
  }
}

function visibleBox(view) {
  const [x0, x1] = view.xScale.domain();
  const [y0, y1] = view.yScale.domain();
  return [Math.min(x0, x1), Math.min(y0, y1), Math.max(x0, x1), Math.max(y0, y1)];
}

// While the view moves, draw a sample of the points; at rest, the full set (and, for
// stores larger than one draw, the rows of the view fetched from the server).
function onViewChange(view) {
  hover(view, -1); // the point moved from under the pointer
  state.motionFrames += 1;
  if (state.moving) view.frameTimes.push(performance.now());
  startMotion(view);
  scheduleRest(view);
}

// Called before the first frame of a motion where possible (a drag's first move, a wheel
// turn), so that no full-set frame is queued ahead of the sampled ones.
function startMotion(view) {
  if (state.moving) return;
  state.moving = true;
  view.frameTimes = [];
  if (state.points > MOTION_POINTS) {
    const step = state.points / MOTION_POINTS;
    const sample = Array.from({ length: MOTION_POINTS }, (_, i) => Math.floor(i * step));
    view.sp.filter(sample, { preventEvent: true });
  }
}

// At rest: no view change for REST_MS and no mouse button held (a slow frame in the middle
// of a drag is not rest: redrawing the full set then would stall the drag).
function scheduleRest(view) {
  clearTimeout(view.restTimer);
  if (!view.dragging) view.restTimer = setTimeout(() => onRest(view), REST_MS);
}

// The median frame interval of the motion that ended (its first two frames may be queued
// full-set frames) sizes the next motion's sample.
function resizeMotionSample(times) {
  if (MOTION_FIXED || times.length < 5) return;
  const gaps = times.slice(3).map((t, i) => t - times[i + 2]).sort((a, b) => a - b);
  const fps = 1000 / gaps[Math.floor(gaps.length / 2)];
  if (fps < MOTION_FPS[0]) MOTION_POINTS = Math.max(MOTION_MIN, Math.round(MOTION_POINTS * 0.6));
  else if (fps > MOTION_FPS[1]) MOTION_POINTS = Math.round(MOTION_POINTS * 1.5);
  state.motionPoints = MOTION_POINTS;
}

async function onRest(view) {
  const { sp, meta } = view;
  state.moving = false;
  if (state.points > MOTION_POINTS) await sp.unfilter({ preventEvent: true });
  resizeMotionSample(view.frameTimes);
  restoreSelection(view);
  saveHash(sp);
  if (meta.drawn > meta.max_points) await fetchView(view);
}

// Stores larger than one draw: at rest, the rows of the visible box (the overview when the
// whole map is in view), unless the rows already drawn are all of that box's.
async function fetchView(view) {
  const box = visibleBox(view);
  const whole = box[0] <= -1 && box[1] <= -1 && box[2] >= 1 && box[3] >= 1;
  const wanted = whole ? null : box;
  const held = view.box && view.points.totalInView <= view.points.rows.length;
  if (wanted && held && wanted[0] >= view.box[0] && wanted[1] >= view.box[1]
      && wanted[2] <= view.box[2] && wanted[3] <= view.box[3]) return;
  if (!wanted && !view.box) return;
  view.box = wanted;
  await loadPoints(view, wanted);
}

// --- selection ------------------------------------------------------------------------

function restoreSelection(view) {
  const idx = state.selection.map((r) => rowIndex(view.points.rows, r)).filter((i) => i >= 0);
  if (!idx.length && !view.sp.get('selectedPoints').length) return; // a redraw of nothing
  view.sp.select(idx, { preventEvent: true });
}

async function showSelection(view, rows) {
  state.selection = rows;
  tell({ selection: Array.from(rows) });
  const box = $('selection');
  if (!rows.length) {
    box.hidden = true;
    return;
  }
  const body = new Uint32Array(rows).buffer;
  const stats = await json('/api/selection', { method: 'POST', body });
  box.hidden = false;
  $('sel-count').textContent = `${stats.count.toLocaleString()} selected`
    + (stats.sigma_mean === null ? '' : `, mean σ ${stats.sigma_mean.toFixed(3)}`);
  const hist = $('sel-hist');
  hist.replaceChildren();
  const entries = Object.entries(stats.labels || {});
  const most = Math.max(1, ...entries.map(([, c]) => c));
  const { meta } = view;
  const colours = labelColours(meta.label_count);
  const names = Array.from({ length: meta.label_count }, (_, i) => meta.label_names?.[i] ?? String(i));
  for (const [name, c] of entries) { // each bar in its label's colour on the map
    const i = names.indexOf(name);
    const colour = colours[i >= 0 ? i : meta.label_count].css;
    const row = document.createElement('div');
    row.innerHTML = `<span></span><b style="width:${(100 * c) / most}%;background:${colour}"></b><span>${c}</span>`;
    row.firstChild.textContent = name;
    hist.append(row);
  }
  state.selectionStats = stats;
}

// The rows inside a lasso: found here among the points drawn when they are all the rows in
// view; asked of the server, which holds every row, when the page draws a sample of them.
async function lassoRows(view, polygon) {
  if (view.points.totalInView <= view.points.rows.length) {
    const inside = pointsInPolygon(view.points.x, view.points.y, polygon);
    return { inside, rows: Array.from(inside, (i) => view.points.rows[i]) };
  }
  const body = new Float64Array(polygon.flat()).buffer;
  const r = await api(`/api/lasso?${new URLSearchParams({ map: state.map })}`, { method: 'POST', body });
  const rows = Array.from(new Uint32Array(await r.arrayBuffer()));
  const inside = rows.map((row) => rowIndex(view.points.rows, row)).filter((i) => i >= 0);
  return { inside, rows };
}

// The lasso is drawn over the motion sample (smooth with software WebGL); its rows are then
// found (lassoRows) and selected once the full set is back.
async function finishLasso(view, polygon) {
  const started = performance.now();
  view.lassoEnded = true; // until the next press
  view.lassoIndices = [];
  const { inside, rows } = await lassoRows(view, polygon);
  state.moving = false;
  if (view.sp.get('filteredPoints').length < state.points) await view.sp.unfilter({ preventEvent: true });
  view.sp.select(inside, { preventEvent: true });
  view.lassoIndices = inside;
  view.lassoing = false;
  state.lassoMs = performance.now() - started; // rows found and selected
  await showSelection(view, rows);
  state.lassoSummaryMs = performance.now() - started; // and their summary shown
}

async function downloadSelection(format) {
  const body = new Uint32Array(state.selection).buffer;
  const blob = await (await api(`/api/selection?format=${format}`, { method: 'POST', body })).blob();
  const a = document.createElement('a');
  a.href = URL.createObjectURL(blob);
  a.download = `selection.${format}`;
  a.click();
}

// --- hover, panel, decoding -------------------------------------------------------------

async function imageLoaded(img, path) {
  const src = await imageUrl(path);
  return new Promise((resolve) => {
    img.onload = () => { release(src); resolve(true); };
    img.onerror = () => { release(src); resolve(false); };
    img.src = src;
  });
}

// The drawn point under the pointer (within its drawn size and 4 px), or -1; none while the
// view moves, when a sample of the points is drawn.
function pick(view, event) {
  if (!view.grid || state.moving) return -1;
  const { xScale, yScale, sp } = view;
  const ux = Math.abs(xScale.invert(1) - xScale.invert(0));
  const uy = Math.abs(yScale.invert(1) - yScale.invert(0));
  const radius = drawnSize(Number($('size').value), sp.get('camera').scaling[0]) + 4;
  return nearest(view.grid, xScale.invert(event.offsetX), yScale.invert(event.offsetY), ux, uy, radius);
}

// Hover the point `index` of those drawn (-1: none): its ring over the map and its tooltip.
function hover(view, index, event) {
  const row = index >= 0 ? view.points.rows[index] : null;
  if (row === state.hovered) return;
  const ring = $('hover-ring');
  if (row === null) {
    state.hovered = null;
    state.tooltipComplete = false;
    $('tooltip').hidden = true;
    ring.hidden = true;
    return;
  }
  const d = drawnSize(Number($('size').value), view.sp.get('camera').scaling[0]) + 6;
  const [x, y] = state.toScreen(view.points.x[index], view.points.y[index]);
  Object.assign(ring.style, { width: `${d}px`, height: `${d}px`, left: `${x - d / 2}px`, top: `${y - d / 2}px` });
  ring.hidden = false;
  showTooltip(view, index, event);
}

async function showTooltip(view, index, event) {
  const started = event ? event.timeStamp : performance.now();
  const row = view.points.rows[index];
  state.hovered = row;
  state.tooltipComplete = false;
  const tip = $('tooltip');
  tip.hidden = false;
  placeTooltip(event);
  const info = await json(`/api/rows/${row}`);
  if (state.hovered !== row) return;
  $('tip-text').textContent = [`row ${row}`, info.id && `id ${info.id}`,
    info.label_name !== null && `label ${info.label_name}`,
    `mean σ ${info.sigma_mean.toFixed(3)}`,
    ...ownColumns(info).slice(0, 3).map(([k, v]) => `${k} ${shorten(v, 60)}`)].filter(Boolean).join(' · ');
  const loads = [imageLoaded($('tip-recon'), `/api/rows/${row}/reconstruction.png`)];
  $('tip-input').hidden = !view.meta.inputs;
  if (view.meta.inputs) loads.push(imageLoaded($('tip-input'), `/api/rows/${row}/input.png`));
  $('tip-sigma').hidden = !view.meta.spatial;
  if (view.meta.spatial) loads.push(imageLoaded($('tip-sigma'), `/api/rows/${row}/sigma.png`));
  await Promise.all(loads);
  placeTooltip(); // its size is known now
  if (state.hovered === row) {
    state.tooltipRow = row;
    state.tooltipComplete = true;
    state.tooltipMs = performance.now() - started; // mouse event to both images shown
  }
}

// The row's values of the input's own columns that it has, as [name, value].
function ownColumns(info) {
  return Object.entries(info.columns || {}).filter(([, v]) => v !== null);
}

function shorten(v, n) {
  const text = typeof v === 'number' ? String(Number(v.toPrecision(6))) : String(v);
  return text.length > n ? `${text.slice(0, n - 1)}…` : text;
}

let pointer = null; // the last pointer event over the map

// Beside the pointer, on whichever side keeps the whole tooltip inside the window.
function placeTooltip(event) {
  if (event) pointer = event;
  if (!pointer) return;
  const tip = $('tooltip');
  const { width, height } = tip.getBoundingClientRect();
  const gap = 16;
  const { clientX: x, clientY: y } = pointer;
  const left = x + gap + width <= window.innerWidth ? x + gap : x - gap - width;
  const top = y + gap + height <= window.innerHeight ? y + gap : y - gap - height;
  tip.style.left = `${Math.max(0, left)}px`;
  tip.style.top = `${Math.max(0, top)}px`;
}

async function decodeInto(img, z) {
  const r = await api('/api/decode', {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ z }),
  });
  const url = URL.createObjectURL(await r.blob());
  await imageLoaded(img, url);
  URL.revokeObjectURL(url);
}

// Z = 2: hovering empty space decodes that point of the plane.
let planeBusy = false;
let planeNext = null;
async function decodePlane(view, event) {
  const { meta } = view;
  if (meta.z !== 2 || state.map !== 'mu' || state.hovered !== null) return;
  const rect = $('map').getBoundingClientRect();
  const x = view.xScale.invert(event.clientX - rect.left);
  const y = view.yScale.invert(event.clientY - rect.top);
  const [cx, cy, half] = meta.mu_frame;
  planeNext = [[cx + x * half, cy + y * half]];
  if (planeBusy) return;
  planeBusy = true;
  while (planeNext) {
    const z = planeNext;
    planeNext = null;
    const tip = $('tooltip');
    tip.hidden = false;
    placeTooltip(event);
    $('tip-input').hidden = true;
    $('tip-sigma').hidden = true;
    $('tip-text').textContent = `decoded z = (${z[0].map((v) => v.toFixed(2)).join(', ')})`;
    await decodeInto($('tip-recon'), z).catch(() => {});
    state.planeDecodes += 1;
    state.planeZ = z[0];
  }
  planeBusy = false;
}

async function openPanel(view, row) {
  const info = await json(`/api/rows/${row}`).catch(() => null);
  if (!info || info.skipped) return;
  state.panelRow = row;
  state.panelInfo = info;
  const { meta } = view;
  $('panel').hidden = false;
  $('p-title').textContent = `row ${row}` + (info.id ? ` — ${info.id}` : '')
    + (info.label_name !== null ? ` — label ${info.label_name}` : '');
  $('p-columns').replaceChildren(...ownColumns(info).map(([k, v]) => {
    const tr = document.createElement('tr');
    const th = document.createElement('th');
    const td = document.createElement('td');
    th.textContent = k;
    td.textContent = shorten(v, 400);
    tr.append(th, td);
    return tr;
  }));
  $('p-input').hidden = !meta.inputs;
  const loads = [imageLoaded($('p-recon'), `/api/rows/${row}/reconstruction.png`),
    imageLoaded($('p-samples'), `/api/rows/${row}/samples.png?n=8`)];
  if (meta.inputs) loads.push(imageLoaded($('p-input'), `/api/rows/${row}/input.png`));
  const near = await json(`/api/rows/${row}/neighbours?k=8&map=${state.map}`);
  state.neighbours = near;
  for (const [key, el] of [['latent', 'p-near-mu'], ['map', 'p-near-map']]) {
    $(el).replaceChildren(...near[key].map((r) => {
      const img = document.createElement('img');
      imageLoaded(img, meta.inputs ? `/api/rows/${r}/input.png` : `/api/rows/${r}/reconstruction.png`);
      img.title = `row ${r}`;
      img.onclick = () => openPanel(view, r);
      return img;
    }));
  }
  buildTraversal(view, info);
  await Promise.all(loads);
  saveHash(view.sp);
}

// Latent traversal: one slider per offered dimension (per channel for spatial latents),
// decoded live while dragging: one request in flight, the latest position wins.
function buildTraversal(view, info) {
  const { meta } = view;
  const box = $('p-traverse');
  box.replaceChildren();
  const z = info.mu.slice();
  const channels = meta.spatial ? meta.latent_shape[0] : 0;
  const per = meta.spatial ? meta.latent_shape[1] * meta.latent_shape[2] : 0;
  const offsets = new Array(channels).fill(0);
  const sliders = meta.spatial
    ? offsets.map((_, c) => ({ label: `channel ${c}`, lo: -3, hi: 3, value: 0, set: (v) => { offsets[c] = v; } }))
    : meta.traversal.map((t) => ({
      label: `z[${t.dim}]`, lo: Math.min(t.lo, z[t.dim]), hi: Math.max(t.hi, z[t.dim]), value: z[t.dim],
      set: (v) => { z[t.dim] = v; },
    }));
  let busy = false;
  let pending = false;
  const current = () => (meta.spatial
    ? info.mu.map((v, i) => v + offsets[Math.floor(i / per)]) : z.slice());
  const run = async () => {
    if (busy) { pending = true; return; }
    busy = true;
    do {
      pending = false;
      await decodeInto($('p-traversal'), [current()]).catch(() => {});
      state.traversalDecodes = (state.traversalDecodes || 0) + 1;
    } while (pending);
    busy = false;
  };
  for (const s of sliders) {
    const label = document.createElement('label');
    const input = document.createElement('input');
    Object.assign(input, { type: 'range', min: s.lo, max: s.hi, step: (s.hi - s.lo) / 200, value: s.value });
    input.oninput = () => { s.set(Number(input.value)); run(); };
    label.append(s.label, input);
    box.append(label);
  }
  state.traversal = { current, run };
  run();
}

async function pin(view) {
  const row = state.panelRow;
  if (row === null) return;
  state.pinned = [...state.pinned.filter((r) => r !== row), row].slice(-2);
  $('pins').textContent = `pinned: ${state.pinned.map((r) => `row ${r}`).join(' and ')}`;
  if (state.pinned.length < 2) return;
  const [a, b] = await Promise.all(state.pinned.map((r) => json(`/api/rows/${r}`)));
  const steps = 8;
  const z = Array.from({ length: steps }, (_, k) => a.mu.map((v, i) => v + ((b.mu[i] - v) * k) / (steps - 1)));
  $('interp').hidden = false;
  await decodeInto($('interp-img'), z);
  state.interpolated = state.pinned.slice();
}

// --- wiring ---------------------------------------------------------------------------

function wireEvents(view) {
  const { sp } = view;
  $('map').addEventListener('mousemove', (e) => {
    placeTooltip(e);
    if (e.buttons) return; // a drag: the scatterplot's pan or lasso
    // a plain move never reaches the scatterplot, whose hover would redraw every point
    e.stopPropagation();
    hover(view, pick(view, e), e);
    decodePlane(view, e);
  });
  $('map').addEventListener('mouseleave', () => hover(view, -1));
  $('map').addEventListener('pointerdown', () => {
    view.dragging = true;
    view.lassoEnded = false;
    view.lassoStarted = false;
  });
  $('map').addEventListener('pointermove', (e) => { if (view.dragging && e.buttons) startMotion(view); });
  $('map').addEventListener('wheel', () => { startMotion(view); scheduleRest(view); }, { passive: true });
  window.addEventListener('pointerup', () => {
    view.dragging = false;
    sp.hover(-1, { preventEvent: true }); // what the scatterplot hovered during the drag
    if (state.moving) scheduleRest(view);
  });
  $('map').addEventListener('click', () => { // a press that drew a lasso is not a click
    if (state.hovered !== null && !view.lassoStarted) openPanel(view, state.hovered);
  });
  sp.subscribe('select', () => {
    if (view.lassoing) return;
    if (view.lassoEnded) { // a lasso closed where it began reads as a click: keep the lasso's
      sp.select(view.lassoIndices, { preventEvent: true });
      return;
    }
    restoreSelection(view); // a click opens the point's panel; it selects nothing
  });
  sp.subscribe('lassoStart', () => {
    view.lassoing = true;
    view.lassoStarted = true;
    startMotion(view);
  });
  sp.subscribe('lassoEnd', ({ coordinates }) => finishLasso(view, coordinates));
  sp.subscribe('deselect', () => showSelection(view, []));
  sp.subscribe('view', () => onViewChange(view));
  $('mapsel').onchange = guarded(async () => {
    state.map = $('mapsel').value;
    labelAxes(view.meta);
    view.box = null;
    await loadPoints(view, null);
    sp.reset();
  });
  $('colour').onchange = guarded(async () => {
    state.colour = $('colour').value;
    $('dim').hidden = state.colour !== 'dim';
    await recolour(view);
  });
  $('dim').onchange = guarded(() => recolour(view));
  onCommand(guarded(async (m) => { // from the notebook: select rows, colour by a column
    if (m.select) {
      await showSelection(view, m.select);
      restoreSelection(view);
    }
    if (m.colour) {
      if (m.column && !columnOf(view.meta, m.colour)) {
        view.meta.columns.push(m.column);
        $('colour').add(new Option(m.column.name, m.colour));
      }
      $('colour').value = m.colour;
      state.colour = m.colour;
      $('dim').hidden = state.colour !== 'dim';
      await recolour(view);
    }
  }));
  $('size').oninput = () => { sp.set({ pointSize: Number($('size').value) }); saveHash(sp); };
  $('search').onchange = guarded(async () => {
    const q = $('search').value;
    const { rows } = await json(`/api/search?q=${encodeURIComponent(q)}`);
    $('search-note').textContent = !q ? '' : rows.length
      ? `${rows.length.toLocaleString()} match${rows.length === 1 ? '' : 'es'}`
      : `no match for “${q}”`;
    await showSelection(view, rows);
    restoreSelection(view);
  });
  $('download').onclick = guarded(() => downloadSelection('csv'));
  $('download-parquet').onclick = guarded(() => downloadSelection('parquet'));
  $('pin').onclick = () => pin(view);
  $('panel').addEventListener('pointerenter', () => { $('tooltip').hidden = true; });
  $('close').onclick = () => { $('panel').hidden = true; state.panelRow = null; saveHash(sp); };
  window.addEventListener('resize', () => sp.refresh());
}

async function recolour(view) {
  await colourValues(view);
  applyColour(view);
  await draw(view);
  restoreSelection(view);
  saveHash(view.sp);
}

main().catch((e) => { banner(`explorer failed: ${e.message}`); state.error = e.message; });
