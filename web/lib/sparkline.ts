/** An SVG polyline path for a small inline chart: values scaled into width x height, newest at the right. */
export function sparklinePath(values: readonly number[], width: number, height: number, pad = 2): string {
  const finite = values.filter((v) => Number.isFinite(v));
  if (finite.length === 0) return '';
  const lo = Math.min(...finite);
  const hi = Math.max(...finite);
  const span = hi - lo || 1;
  const n = values.length;
  const dx = n > 1 ? (width - 2 * pad) / (n - 1) : 0;
  let d = '';
  let pen = false;
  values.forEach((v, i) => {
    if (!Number.isFinite(v)) {
      pen = false;
      return;
    }
    const x = pad + i * dx;
    const y = pad + (height - 2 * pad) * (1 - (v - lo) / span);
    d += `${pen ? 'L' : 'M'}${x.toFixed(1)} ${y.toFixed(1)}`;
    pen = true;
  });
  return d;
}
