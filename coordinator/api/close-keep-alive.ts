import type { FastifyInstance } from 'fastify';

/**
 * Shutdown must not wait for HTTP keep-alive. Node closes idle keep-alive sockets when the server closes, but a socket
 * whose request was still in flight at that moment stays open after its response until keepAliveTimeout (72 s in
 * Fastify): a worker fetching weights as the coordinator stops held `close()` for over a minute. From preClose until
 * the server is closed, idle sockets are closed again every 50 ms, so each goes as soon as its response is out.
 */
export function closeKeepAliveOnShutdown(app: FastifyInstance, everyMs = 50): void {
  let sweep: ReturnType<typeof setInterval> | null = null;
  app.addHook('preClose', async () => {
    sweep = setInterval(() => app.server.closeIdleConnections(), everyMs);
    sweep.unref();
  });
  app.addHook('onClose', async () => {
    if (sweep) clearInterval(sweep);
  });
}
