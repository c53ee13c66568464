import { readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { svelte } from '@sveltejs/vite-plugin-svelte';
import { defineConfig, type Plugin } from 'vite';

/**
 * The web app: three pages built from web/ into dist/web, which the coordinator serves:
 *   /                -> index.html          (volunteer page)
 *   /requester/...   -> requester.html      (requester dashboard, SPA fallback)
 *   /widget/frame    -> widget-frame.html   (the iframe the embed tag opens after consent)
 *   /widget.js       -> built separately by web/widget/vite.config.widget.ts (IIFE, no dependencies)
 *   /tfjs-wasm/*.wasm   tfjs wasm binaries, copied from node_modules at build time (never committed)
 */
const root = resolve(import.meta.dirname, 'web');
const outDir = resolve(import.meta.dirname, 'dist/web');
const wasmDir = resolve(import.meta.dirname, 'node_modules/@tensorflow/tfjs-backend-wasm/dist');
const coordinator = process.env.SWARMGRAD_COORDINATOR ?? 'http://127.0.0.1:8080';

/** Serves the tfjs wasm binaries in dev and emits them into the build, so they come from the coordinator's origin. */
function tfjsWasm(): Plugin {
  const files = () => readdirSync(wasmDir).filter((f) => f.endsWith('.wasm'));
  return {
    name: 'swarmgrad-tfjs-wasm',
    configureServer(server) {
      server.middlewares.use('/tfjs-wasm', (req, res, next) => {
        const name = (req.url ?? '').replace(/^\//, '').split('?')[0];
        if (!files().includes(name)) return next();
        res.setHeader('Content-Type', 'application/wasm');
        res.end(readFileSync(join(wasmDir, name)));
      });
    },
    generateBundle() {
      for (const name of files()) {
        this.emitFile({ type: 'asset', fileName: `tfjs-wasm/${name}`, source: readFileSync(join(wasmDir, name)) });
      }
    },
  };
}

/** The coordinator's page routes, mirrored by the dev server so deep links work under `npm run dev:web` too. */
function devRoutes(): Plugin {
  return {
    name: 'swarmgrad-dev-routes',
    configureServer(server) {
      server.middlewares.use((req, _res, next) => {
        const path = (req.url ?? '').split('?')[0];
        const query = (req.url ?? '').slice(path.length);
        if (path === '/requester' || (path.startsWith('/requester/') && !path.includes('.'))) {
          req.url = `/requester.html${query}`;
        } else if (path === '/widget/frame') req.url = `/widget-frame.html${query}`;
        next();
      });
    },
  };
}

export default defineConfig({
  root,
  publicDir: resolve(import.meta.dirname, 'public'),
  base: '/',
  plugins: [svelte({ configFile: false }), tfjsWasm(), devRoutes()],
  worker: { format: 'es' },
  build: {
    outDir,
    emptyOutDir: true,
    target: 'es2022',
    chunkSizeWarningLimit: 4096,
    rolldownOptions: {
      input: {
        index: resolve(root, 'index.html'),
        requester: resolve(root, 'requester.html'),
        'widget-frame': resolve(root, 'widget-frame.html'),
      },
    },
  },
  server: {
    port: 5173,
    // In dev the pages talk to a coordinator running elsewhere; the build is served by the coordinator itself.
    proxy: { '/api': { target: coordinator, ws: true, changeOrigin: true } },
  },
});
