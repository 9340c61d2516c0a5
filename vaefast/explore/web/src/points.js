// The binary columns of /api/points and /api/dimension (little-endian, 16 bytes a point).

export function readPoints(buffer, labelCount) {
  const k = new DataView(buffer).getUint32(0, true);
  let at = 4;
  const take = (Type, n) => {
    const out = new Type(buffer.slice(at, at + n * Type.BYTES_PER_ELEMENT));
    at += n * Type.BYTES_PER_ELEMENT;
    return out;
  };
  const rows = take(Uint32Array, k);
  const x = take(Float32Array, k);
  const y = take(Float32Array, k);
  const labels = take(Int16Array, k);
  const sigma16 = take(Uint16Array, k);
  // valueA: the label as a category (no label: the last category); valueB: mean σ in [0, 1]
  const z = new Float32Array(k);
  for (let i = 0; i < k; i += 1) z[i] = labels[i] < 0 || labels[i] >= labelCount ? labelCount : labels[i];
  const sigma = readUint16(sigma16.buffer);
  return { rows, x, y, z, labelZ: z, sigma, w: sigma, labels };
}

export function readUint16(buffer) {
  const v = new Uint16Array(buffer);
  const out = new Float32Array(v.length);
  for (let i = 0; i < v.length; i += 1) out[i] = v[i] / 65535;
  return out;
}

// The point index of a store row in the sorted rows drawn, or -1.
export function rowIndex(rows, row) {
  let lo = 0;
  let hi = rows.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (rows[mid] === row) return mid;
    if (rows[mid] < row) lo = mid + 1;
    else hi = mid - 1;
  }
  return -1;
}

// Indices of the points (x[i], y[i]) inside the polygon [[x, y], ...] (even-odd rule),
// testing only those inside its bounding box.
export function pointsInPolygon(x, y, polygon) {
  const n = polygon.length;
  let x0 = Infinity;
  let y0 = Infinity;
  let x1 = -Infinity;
  let y1 = -Infinity;
  for (const [px, py] of polygon) {
    x0 = Math.min(x0, px); x1 = Math.max(x1, px);
    y0 = Math.min(y0, py); y1 = Math.max(y1, py);
  }
  const out = [];
  for (let i = 0; i < x.length; i += 1) {
    const px = x[i];
    const py = y[i];
    if (px < x0 || px > x1 || py < y0 || py > y1) continue;
    let inside = false;
    for (let a = 0, b = n - 1; a < n; b = a, a += 1) {
      const [ax, ay] = polygon[a];
      const [bx, by] = polygon[b];
      if ((ay > py) !== (by > py) && px < ((bx - ax) * (py - ay)) / (by - ay) + ax) inside = !inside;
    }
    if (inside) out.push(i);
  }
  return out;
}
