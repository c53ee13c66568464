import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import fastifyStatic from '@fastify/static';
import type { FastifyInstance } from 'fastify';

/**
 * The Content-Security-Policy of the web app: everything from the coordinator's origin; tfjs-wasm needs
 * 'wasm-unsafe-eval' (WebAssembly.compile) and the training runs in a module worker. The socket is same-origin
 * ('self' covers ws:/wss: of the same host in CSP 3).
 */
const CSP = [
  "default-src 'self'",
  "script-src 'self' 'wasm-unsafe-eval'",
  "worker-src 'self' blob:",
  "connect-src 'self'",
  "img-src 'self' data: blob:",
  "style-src 'self' 'unsafe-inline'",
  "font-src 'self'",
  "object-src 'none'",
  "base-uri 'self'",
  "form-action 'self'",
  "frame-src 'self'",
].join('; ');

/** Only the widget frame may be framed, by any site (it trains only after consent: web/widget/consent.ts). */
const FRAMEABLE = new Set(['/widget/frame']);

/**
 * Serves the built web app (vite build into dist/web): the volunteer page at /, the requester dashboard as a
 * single-page app under /requester, the widget tag at /widget.js and the widget's iframe at /widget/frame. Every
 * page carries the CSP above; all but the widget frame refuse to be framed (clickjacking of Start, Stop, keys).
 */
export async function webApp(app: FastifyInstance, opts: { webDir: string }): Promise<void> {
  app.addHook('onSend', async (req, reply, payload) => {
    if (req.url.startsWith('/api/')) return payload;
    const path = req.url.split('?')[0];
    const frameable = FRAMEABLE.has(path);
    reply.header('content-security-policy', `${CSP}; frame-ancestors ${frameable ? '*' : "'none'"}`);
    if (!frameable) reply.header('x-frame-options', 'DENY');
    reply.header('x-content-type-options', 'nosniff');
    reply.header('referrer-policy', 'strict-origin-when-cross-origin');
    return payload;
  });
  const root = resolve(opts.webDir);
  if (!existsSync(resolve(root, 'index.html'))) {
    app.get('/', async (_req, reply) =>
      reply
        .type('text/html')
        .send(
          '<!doctype html><title>swarmgrad</title><p>The web app is not built. Run <code>npm run build</code>, ' +
            'or use the REST API at <a href="/api/v1/docs">/api/v1/docs</a>.</p>',
        ),
    );
    return;
  }
  await app.register(fastifyStatic, { root, prefix: '/', index: ['index.html'], wildcard: true });
  const page = (file: string) => async (_req: unknown, reply: { sendFile: (f: string) => unknown }) =>
    reply.sendFile(file);
  app.get('/requester', page('requester.html'));
  app.get('/requester/*', page('requester.html'));
  app.get('/widget/frame', page('widget-frame.html'));
}
