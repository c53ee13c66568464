import type { BackendName } from './settings.js';

/**
 * What this device can train with, found without running any work: the WebGPU adapter (vendor, architecture and
 * the limits that bound model size) and WebAssembly SIMD and threads support.
 */
export interface GpuInfo {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  isFallback: boolean;
  limits: {
    maxBufferSize: number;
    maxStorageBufferBindingSize: number;
    maxComputeWorkgroupStorageSize: number;
    maxComputeInvocationsPerWorkgroup: number;
  };
}

export interface Capabilities {
  webgpu: GpuInfo | null;
  /** Why WebGPU is not available, when it is not. */
  webgpuError?: string;
  wasm: boolean;
  wasmSimd: boolean;
  /** Threads need SharedArrayBuffer, which needs a cross-origin isolated page. */
  wasmThreads: boolean;
  crossOriginIsolated: boolean;
  hardwareConcurrency: number;
  /** Backends worth trying, best first. */
  candidates: BackendName[];
}

// Minimal WebGPU shapes: the DOM lib of this TypeScript version has no WebGPU types.
interface GpuAdapterLike {
  info?: { vendor?: string; architecture?: string; device?: string; description?: string; isFallbackAdapter?: boolean };
  isFallbackAdapter?: boolean;
  limits: Record<string, number>;
}
interface GpuLike {
  requestAdapter(o?: { powerPreference?: string }): Promise<GpuAdapterLike | null>;
}

/** A module whose only function returns i8x16.splat(0): valid only where SIMD is supported. */
const SIMD_PROBE = new Uint8Array([
  0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 8, 1, 6, 0, 65, 0, 253, 15, 11,
]);
/** A module declaring one shared memory page: valid only where the threads proposal is supported. */
const THREADS_PROBE = new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 5, 4, 1, 3, 1, 1]);

export function wasmFeatures(): { wasm: boolean; simd: boolean; threads: boolean } {
  if (typeof WebAssembly !== 'object') return { wasm: false, simd: false, threads: false };
  const simd = WebAssembly.validate(SIMD_PROBE);
  const threads =
    WebAssembly.validate(THREADS_PROBE) &&
    typeof SharedArrayBuffer === 'function' &&
    globalThis.crossOriginIsolated === true;
  return { wasm: true, simd, threads };
}

export async function detectWebGpu(): Promise<{ info: GpuInfo | null; error?: string }> {
  const gpu = (navigator as Navigator & { gpu?: GpuLike }).gpu;
  if (!gpu) return { info: null, error: 'this browser has no WebGPU' };
  try {
    const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
    if (!adapter) return { info: null, error: 'no WebGPU adapter' };
    const i = adapter.info ?? {};
    return {
      info: {
        vendor: i.vendor || 'unknown',
        architecture: i.architecture || 'unknown',
        device: i.device || '',
        description: i.description || '',
        // Newer browsers report the fallback flag on adapter.info, older ones on the adapter.
        isFallback: i.isFallbackAdapter === true || adapter.isFallbackAdapter === true,
        limits: {
          maxBufferSize: adapter.limits.maxBufferSize,
          maxStorageBufferBindingSize: adapter.limits.maxStorageBufferBindingSize,
          maxComputeWorkgroupStorageSize: adapter.limits.maxComputeWorkgroupStorageSize,
          maxComputeInvocationsPerWorkgroup: adapter.limits.maxComputeInvocationsPerWorkgroup,
        },
      },
    };
  } catch (err) {
    return { info: null, error: `WebGPU adapter request failed: ${String(err)}` };
  }
}

export async function detectCapabilities(): Promise<Capabilities> {
  const gpu = await detectWebGpu();
  const w = wasmFeatures();
  const candidates: BackendName[] = [];
  if (gpu.info) candidates.push('webgpu');
  if (w.wasm) candidates.push('wasm');
  candidates.push('cpu');
  return {
    webgpu: gpu.info,
    webgpuError: gpu.error,
    wasm: w.wasm,
    wasmSimd: w.simd,
    wasmThreads: w.threads,
    crossOriginIsolated: globalThis.crossOriginIsolated === true,
    hardwareConcurrency: navigator.hardwareConcurrency ?? 1,
    candidates,
  };
}

/** A one-line description of the adapter for the hello message and the page. */
export function adapterLabel(info: GpuInfo | null): string | undefined {
  if (!info) return undefined;
  const parts = [info.vendor, info.architecture, info.description].filter((s) => s && s !== 'unknown');
  return (parts.join(' ') || 'unknown adapter').slice(0, 200);
}
