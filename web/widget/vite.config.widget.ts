import { resolve } from 'node:path';
import { defineConfig } from 'vite';

/**
 * The embed tag (web/widget/tag.ts) as one small dependency-free IIFE at dist/web/widget.js. Built after the main
 * app (which empties dist/web), so this build must not empty it.
 */
export default defineConfig({
  root: import.meta.dirname,
  publicDir: false,
  build: {
    outDir: resolve(import.meta.dirname, '../../dist/web'),
    emptyOutDir: false,
    target: 'es2019',
    minify: true,
    lib: {
      entry: resolve(import.meta.dirname, 'tag.ts'),
      formats: ['iife'],
      name: 'swarmgradWidget',
      fileName: () => 'widget.js',
    },
  },
});
