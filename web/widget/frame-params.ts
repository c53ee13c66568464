/** The widget frame's settings come from its URL, which the embed tag builds: /widget/frame?account=0x…&intensity=50 */
export interface FrameParams {
  account: string | null;
  intensity: number;
}

export function frameParams(search: string): FrameParams {
  const q = new URLSearchParams(search);
  const account = (q.get('account') ?? '').trim();
  const raw = Number(q.get('intensity') ?? 50);
  return {
    account: /^0x[0-9a-fA-F]{40}$/.test(account) ? account : null,
    intensity: Number.isFinite(raw) ? Math.min(100, Math.max(10, Math.round(raw))) : 50,
  };
}
