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
  return { rows, x, y, z, sigma, w: sigma, labels };
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
