/**
 * A tiny history-API router for the dashboard, which the coordinator serves under /requester/* with an SPA
 * fallback: /requester (jobs), /requester/new (create), /requester/jobs/:id (one job).
 */
export type Route = { name: 'jobs' } | { name: 'new' } | { name: 'job'; id: string } | { name: 'notFound' };

export const BASE = '/requester';

export function parseRoute(pathname: string): Route {
  const p = pathname.replace(/\/+$/, '');
  if (p === BASE || p === '') return { name: 'jobs' };
  if (p === `${BASE}/new`) return { name: 'new' };
  const m = new RegExp(`^${BASE}/jobs/([^/]+)$`).exec(p);
  if (m) return { name: 'job', id: decodeURIComponent(m[1]) };
  return { name: 'notFound' };
}

export function jobHref(id: string): string {
  return `${BASE}/jobs/${encodeURIComponent(id)}`;
}

class Router {
  route = $state<Route>(parseRoute(location.pathname));

  constructor() {
    addEventListener('popstate', () => {
      this.route = parseRoute(location.pathname);
    });
  }

  go(href: string): void {
    if (href === location.pathname) return;
    history.pushState(null, '', href);
    this.route = parseRoute(location.pathname);
    scrollTo(0, 0);
  }

  /** Click handler for in-app links: plain clicks navigate without a reload; modified clicks open normally. */
  readonly link = (ev: MouseEvent) => {
    const a = (ev.currentTarget as HTMLElement).closest('a');
    if (!a || ev.defaultPrevented || ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey || ev.altKey) return;
    ev.preventDefault();
    this.go(a.pathname);
  };
}

export const router = new Router();
