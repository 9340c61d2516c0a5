// Which drawn point is under the pointer, found without the scatterplot: its own hover
// redraws every point (0.6–0.8 s at 1M points with software WebGL), and a hover that comes
// while a frame is drawn waits for it. The highlight is an element over the canvas instead.

// A uniform grid over the map's [-1, 1]² square, the point indices of each cell contiguous
// in `order` (a counting sort: two passes over the points).
export function gridIndex(x, y) {
  const n = x.length;
  const g = Math.max(16, Math.min(1024, Math.ceil(Math.sqrt(n / 4))));
  const cellOfPoint = new Uint32Array(n);
  const start = new Uint32Array(g * g + 1);
  for (let i = 0; i < n; i += 1) {
    const c = cellOf(x[i], g) + g * cellOf(y[i], g);
    cellOfPoint[i] = c;
    start[c + 1] += 1;
  }
  for (let c = 0; c < g * g; c += 1) start[c + 1] += start[c];
  const fill = start.slice(0, g * g);
  const order = new Uint32Array(n);
  for (let i = 0; i < n; i += 1) order[fill[cellOfPoint[i]]++] = i;
  return { g, start, order, x, y };
}

// Points beyond the square fall in its edge cells, and queries are clamped the same way.
function cellOf(v, g) {
  const c = Math.floor(((v + 1) / 2) * g);
  return c < 0 ? 0 : c >= g ? g - 1 : c;
}

// The point nearest to (px, py) within `radius` screen pixels, or -1; `ux`, `uy`: data units
// per pixel along x and y. Of points at the same place, the last (drawn on top) wins.
export function nearest(index, px, py, ux, uy, radius) {
  const { g, start, order, x, y } = index;
  const rx = radius * ux;
  const ry = radius * uy;
  const cx0 = cellOf(px - rx, g);
  const cx1 = cellOf(px + rx, g);
  const cy0 = cellOf(py - ry, g);
  const cy1 = cellOf(py + ry, g);
  let best = -1;
  let bestD = radius * radius;
  for (let cy = cy0; cy <= cy1; cy += 1) {
    for (let cx = cx0; cx <= cx1; cx += 1) {
      const c = cx + g * cy;
      for (let k = start[c]; k < start[c + 1]; k += 1) {
        const i = order[k];
        const dx = (x[i] - px) / ux;
        const dy = (y[i] - py) / uy;
        const d = dx * dx + dy * dy;
        if (d < bestD || (d === bestD && i > best)) {
          bestD = d;
          best = i;
        }
      }
    }
  }
  return best;
}

// A point's diameter on screen in CSS pixels, as regl-scatterplot sizes it (its default
// 'asinh' scale mode): `size` at zoom 1, growing slowly when zoomed in, never under 1 px.
export function drawnSize(size, zoom) {
  return zoom > 1 ? (size * Math.asinh(zoom)) / Math.asinh(1) : Math.max(1, size * zoom);
}
