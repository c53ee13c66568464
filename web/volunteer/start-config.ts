import { addressFromPrivateKey, type Hex } from '../../shared/identity/index.js';
import { adapterLabel, type Capabilities } from '../lib/capabilities.js';
import type { BackendName, StoredBenchmark, VolunteerSettings } from '../lib/settings.js';
import type { StartConfig } from '../lib/worker-protocol.js';

/** What the training worker is started with, from the page's settings, identity and capability findings. */
export function startConfig(
  settings: VolunteerSettings,
  identity: { privateKey: Hex; payTo?: string },
  backend: BackendName,
  caps: Capabilities | null,
  bench: StoredBenchmark | null,
): Omit<StartConfig, 'pausedFor'> {
  const measured = bench?.results.find((r) => r.backend === backend)?.examplesPerSecond;
  return {
    coordinatorUrl: location.origin,
    account: addressFromPrivateKey(identity.privateKey),
    privateKey: identity.privateKey,
    payTo: identity.payTo,
    backend,
    adapter: backend === 'webgpu' ? adapterLabel(caps?.webgpu ?? null) : undefined,
    capabilities: {
      examplesPerSecond: measured && measured > 0 ? Math.round(measured) : undefined,
      userAgent: navigator.userAgent.slice(0, 300),
      wasmSimd: caps?.wasmSimd,
      wasmThreads: caps?.wasmThreads,
      hardwareConcurrency: caps?.hardwareConcurrency,
    },
    intensity: settings.intensity,
    autoReconnect: settings.autoReconnect,
    cacheCapBytes: settings.cacheCapMiB * 1024 * 1024,
  };
}
