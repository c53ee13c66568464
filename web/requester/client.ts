import { createClient, type SwarmgradClient } from '../../shared/protocol/api-client.js';

/** The dashboard talks to the coordinator that served it, through the public REST API only. */
const KEY = 'swarmgrad.apiKey';

export function storedApiKey(): string {
  return localStorage.getItem(KEY) ?? '';
}

export function saveApiKey(key: string): void {
  if (key) localStorage.setItem(KEY, key);
  else localStorage.removeItem(KEY);
}

export function dashboardClient(): SwarmgradClient {
  return createClient({ baseUrl: location.origin, apiKey: storedApiKey() || undefined });
}
