/**
 * A tiny history-API router for the dashboard, which the coordinator serves under /requester/* with an SPA
 * fallback: /requester (jobs), /requester/new (create), /requester/jobs/:id (one job), /requester/market (offers).
 */
export type Route =
  | { name: 'jobs' }
  | { name: 'new' }
  | { name: 'job'; id: string }
  | { name: 'market' }
  | { name: 'notFound' };

export const BASE = '/requester';

export function parseRoute(pathname: string): Route {
  const p = pathname.replace(/\/+$/, '');
  if (p === BASE || p === '') return { name: 'jobs' };
  if (p === `${BASE}/new`) return { name: 'new' };
  if (p === `${BASE}/market`) return { name: 'market' };
  const m = new RegExp(`^${BASE}/jobs/([^/]+)$`).exec(p);
  if (m) return { name: 'job', id: decodeURIComponent(m[1]) };
  return { name: 'notFound' };
}

export function jobHref(id: string): string {
  return `${BASE}/jobs/${encodeURIComponent(id)}`;
}
