import * as tf from '@tensorflow/tfjs';
import type { BackendName } from '../lib/settings.js';

/**
 * Loads and selects a tfjs backend inside the training worker. The webgpu and wasm backends are imported on demand,
 * so a device that trains on one never downloads the other. Wasm binaries come from the page's own origin
 * (/tfjs-wasm/, copied there by the build), never from a CDN.
 */
const loaded = new Set<BackendName>(['cpu']);

export async function activateBackend(name: BackendName): Promise<void> {
  if (!loaded.has(name)) {
    if (name === 'webgpu') await import('@tensorflow/tfjs-backend-webgpu');
    if (name === 'wasm') {
      const wasm = await import('@tensorflow/tfjs-backend-wasm');
      wasm.setWasmPaths(new URL('/tfjs-wasm/', self.location.href).href);
    }
    loaded.add(name);
  }
  if (!(await tf.setBackend(name))) throw new Error(`backend ${name} failed to initialise`);
  await tf.ready();
}
