/** Display helpers of the market page; fixed locale so numbers read the same everywhere (and in tests). */

const fmt = (max: number) => new Intl.NumberFormat('en-US', { maximumFractionDigits: max });

/** Credits per TFLOP: up to 6 decimals (the store keeps micro-credits), no trailing zeros. */
export function formatPrice(n: number | null): string {
  return n === null ? '–' : fmt(6).format(n);
}

export function formatNumber(n: number | null, digits = 1): string {
  return n === null ? '–' : fmt(digits).format(n);
}

export function shortAddress(a: string): string {
  return a.length > 12 ? `${a.slice(0, 6)}…${a.slice(-4)}` : a;
}

/** The verification layer's trust record in a few words: audits passed and failed, when it says so. */
export function auditSummary(audit: Record<string, unknown> | null): string {
  if (!audit) return 'no audits yet';
  const passed = Number(audit.total_valid ?? audit.totalValid);
  const failed = Number(audit.failures);
  if (Number.isFinite(passed) && Number.isFinite(failed)) return `${passed} passed, ${failed} failed`;
  return Object.entries(audit)
    .filter(([k, v]) => k !== 'account' && (typeof v === 'number' || typeof v === 'string'))
    .map(([k, v]) => `${k}: ${v}`)
    .join(', ');
}

export function reliabilityText(r: { value: number; known: boolean; completed: number; finished: number }): string {
  if (!r.known) return `new (${r.completed}/${r.finished})`;
  return `${Math.round(r.value * 100)}% (${r.completed}/${r.finished})`;
}
