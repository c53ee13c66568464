import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import fastifyStatic from '@fastify/static';
import type { FastifyInstance } from 'fastify';

/**
 * Serves the built web app (vite build into dist/web): the volunteer page at /, the requester dashboard as a
 * single-page app under /requester, the widget tag at /widget.js and the widget's iframe at /widget/frame.
 */
export async function webApp(app: FastifyInstance, opts: { webDir: string }): Promise<void> {
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
