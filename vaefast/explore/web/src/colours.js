// Colours and scales for the map (no dependencies).

// A d3-like linear scale: regl-scatterplot updates its domain to the visible data box.
export function linearScale(domain, range) {
  let d = domain.slice();
  let r = range.slice();
  const s = (x) => r[0] + ((x - d[0]) / (d[1] - d[0])) * (r[1] - r[0]);
  s.domain = (v) => (v === undefined ? d.slice() : ((d = v.slice()), s));
  s.range = (v) => (v === undefined ? r.slice() : ((r = v.slice()), s));
  s.invert = (p) => d[0] + ((p - r[0]) / (r[1] - r[0])) * (d[1] - d[0]);
  s.copy = () => linearScale(d, r);
  return s;
}

// Tableau 10, then evenly spaced hues; the last entry (grey) is "no label".
const TABLEAU = ['#4e79a7', '#f28e2b', '#e15759', '#76b7b2', '#59a14f', '#edc948', '#b07aa1',
  '#ff9da7', '#9c755f', '#bab0ac'];

function hexRgba(hex) {
  const n = parseInt(hex.slice(1), 16);
  return [(n >> 16) / 255, ((n >> 8) & 255) / 255, (n & 255) / 255, 1];
}

function hslCss(h) {
  return `hsl(${h}, 65%, 55%)`;
}

function cssRgba(css) {
  const c = document.createElement('canvas').getContext('2d');
  c.fillStyle = css;
  return hexRgba(c.fillStyle);
}

export function labelColours(count) {
  const out = [];
  for (let i = 0; i < count; i += 1) {
    const css = i < TABLEAU.length ? TABLEAU[i] : hslCss((i * 137.508) % 360);
    out.push({ css, rgba: i < TABLEAU.length ? hexRgba(css) : cssRgba(css) });
  }
  out.push({ css: '#777777', rgba: hexRgba('#777777') });
  return out;
}

// Viridis anchors, interpolated: the continuous colour map (mean σ, one latent dimension).
const VIRIDIS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];

function viridis(t) {
  const x = Math.min(Math.max(t, 0), 1) * (VIRIDIS.length - 1);
  const i = Math.min(Math.floor(x), VIRIDIS.length - 2);
  const f = x - i;
  return VIRIDIS[i].map((v, k) => (v + (VIRIDIS[i + 1][k] - v) * f) / 255);
}

export function ramp(n) {
  return Array.from({ length: n }, (_, i) => [...viridis(i / (n - 1)), 1]);
}

export function rampCss() {
  const stops = VIRIDIS.map((c, i) => `rgb(${c.join(',')}) ${(100 * i) / (VIRIDIS.length - 1)}%`);
  return `linear-gradient(to right, ${stops.join(', ')})`;
}
