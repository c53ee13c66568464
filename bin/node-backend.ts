import { existsSync } from 'node:fs';
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';

export type NodeBackend = 'webgpu' | 'wasm' | 'cpu';

export interface BackendChoice {
  backend: NodeBackend;
  adapter?: string;
}

const SWIFTSHADER_ICD = '/usr/lib/chromium/vk_swiftshader_icd.json';

/**
 * Picks the fastest tfjs backend Node can offer: WebGPU through Dawn (the `webgpu` package) when an adapter exists,
 * then wasm, then cpu. `only` forces one (tests, benchmarks). A machine without a GPU still gets a real WebGPU adapter
 * when Chromium's SwiftShader Vulkan driver is installed; we use it only when asked, since it is slower than wasm.
 */
export async function chooseNodeBackend(only?: NodeBackend): Promise<BackendChoice> {
  const order: NodeBackend[] = only ? [only] : ['webgpu', 'wasm', 'cpu'];
  for (const b of order) {
    if (b === 'webgpu') {
      const adapter = await tryWebGpu(only === 'webgpu');
      if (adapter) return { backend: 'webgpu', adapter };
      continue;
    }
    try {
      if (await tf.setBackend(b)) {
        await tf.ready();
        return { backend: b };
      }
    } catch {
      // try the next one
    }
  }
  throw new Error(`no usable tfjs backend among ${order.join(', ')}`);
}

/** Sets up navigator.gpu from Dawn and the tfjs webgpu backend; returns the adapter description or null. */
async function tryWebGpu(allowSoftware: boolean): Promise<string | null> {
  try {
    if (allowSoftware && !process.env.VK_ICD_FILENAMES && existsSync(SWIFTSHADER_ICD)) {
      process.env.VK_ICD_FILENAMES = SWIFTSHADER_ICD;
    }
    const { create, globals } = await import('webgpu');
    Object.assign(globalThis, globals);
    const gpu = create([]);
    const adapter = await gpu.requestAdapter();
    if (!adapter) return null;
    const info = adapter.info;
    const name = [info?.vendor, info?.architecture, info?.device, info?.description].filter(Boolean).join(' ');
    // A software adapter is slower than wasm: only take it when webgpu was asked for by name.
    if (!allowSoftware && /swiftshader|llvmpipe|software/i.test(name)) return null;
    Object.defineProperty(globalThis, 'navigator', { value: { gpu }, configurable: true, writable: true });
    await import('@tensorflow/tfjs-backend-webgpu');
    if (!(await tf.setBackend('webgpu'))) return null;
    await tf.ready();
    return name || 'unknown adapter';
  } catch {
    return null;
  }
}
