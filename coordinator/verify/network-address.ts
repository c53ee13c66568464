import { isIP } from 'node:net';

/**
 * The network identity an auditor must not share with the worker it checks: the /24 of an IPv4 address, the /64 of
 * an IPv6 one (one household or one cloud host usually holds a whole prefix). This rule is an extra on top of the
 * account rule, never the only safeguard. Addresses that do not tell clients apart are "unknown" (undefined):
 * loopback and unspecified ones (a local reverse proxy, a developer's machine) and private, shared (CGNAT) and
 * link-local ones (a load balancer on a private subnet, a LAN): there every worker would look like the same network
 * and no unit could ever be audited. Behind a proxy, TRUST_PROXY makes the client's own address the one seen here.
 */
export function auditAddress(ip: string | undefined | null): string | undefined {
  if (!ip) return undefined;
  let addr = ip.trim();
  if (addr.startsWith('::ffff:') && isIP(addr.slice(7)) === 4) addr = addr.slice(7);
  const kind = isIP(addr);
  if (kind === 4) {
    const parts = addr.split('.');
    const [a, b] = [Number(parts[0]), Number(parts[1])];
    const notTelling =
      a === 127 ||
      a === 0 ||
      a === 10 ||
      (a === 172 && b >= 16 && b <= 31) ||
      (a === 192 && b === 168) ||
      (a === 100 && b >= 64 && b <= 127) ||
      (a === 169 && b === 254);
    if (notTelling) return undefined;
    return `${parts.slice(0, 3).join('.')}.0/24`;
  }
  if (kind === 6) {
    const groups = expandIpv6(addr);
    if (groups.every((g, i) => g === 0 || (i === 7 && g === 1))) return undefined; // :: and ::1
    // Unique local (fc00::/7) and link-local (fe80::/10): private networks, as above.
    if ((groups[0] & 0xfe00) === 0xfc00 || (groups[0] & 0xffc0) === 0xfe80) return undefined;
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
