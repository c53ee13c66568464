/** Small display helpers shared by the pages. */

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

export function formatRate(n: number): string {
  if (!Number.isFinite(n) || n <= 0) return '–';
  return n >= 100 ? n.toFixed(0) : n.toFixed(1);
}

export function formatLoss(n: number | undefined): string {
  if (n === undefined || !Number.isFinite(n)) return '–';
  return n.toPrecision(4);
}

export function shortHash(h: string): string {
  return h.length > 12 ? `${h.slice(0, 12)}…` : h;
}

export function formatTime(ms: number): string {
  return new Date(ms).toLocaleTimeString();
}
