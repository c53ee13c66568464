import { parseRoute, type Route } from './routes.js';

export { BASE, jobHref, parseRoute, type Route } from './routes.js';

/** The dashboard's current route as reactive state, kept in step with the address bar. */
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
