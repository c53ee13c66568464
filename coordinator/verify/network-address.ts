import { isIP } from 'node:net';

/**
 * The network identity an auditor must not share with the worker it checks: the /24 of an IPv4 address, the /64 of
 * an IPv6 one (one household or one cloud host usually holds a whole prefix). Loopback and unspecified addresses
 * are "unknown" (undefined): behind a local reverse proxy, or on a developer's machine, every worker would otherwise
 * look like the same host and no unit could ever be audited.
 */
export function auditAddress(ip: string | undefined | null): string | undefined {
  if (!ip) return undefined;
  let addr = ip.trim();
  if (addr.startsWith('::ffff:') && isIP(addr.slice(7)) === 4) addr = addr.slice(7);
  const kind = isIP(addr);
  if (kind === 4) {
    const parts = addr.split('.');
    if (parts[0] === '127' || parts[0] === '0') return undefined;
    return `${parts.slice(0, 3).join('.')}.0/24`;
  }
  if (kind === 6) {
    const groups = expandIpv6(addr);
    if (groups.every((g, i) => g === 0 || (i === 7 && g === 1))) return undefined; // :: and ::1
    return `${groups
      .slice(0, 4)
      .map((g) => g.toString(16))
      .join(':')}::/64`;
  }
  return undefined;
}

function expandIpv6(addr: string): number[] {
  const [head, tail] = addr.split('%')[0].split('::');
  const parse = (s: string | undefined) => (s ? s.split(':').filter((p) => p.length > 0) : []);
  const h = parse(head);
  const t = tail === undefined ? [] : parse(tail);
  const missing = 8 - h.length - t.length;
  const groups = [...h, ...Array<string>(Math.max(0, missing)).fill('0'), ...t];
  return groups.slice(0, 8).map((g) => Number.parseInt(g, 16) || 0);
}
