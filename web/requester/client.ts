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

const WHO = 'swarmgrad.signedInAs';

/** The address of the session the stored key came from (empty for a pasted API key). */
export function storedSignedInAs(): string {
  return localStorage.getItem(WHO) ?? '';
}

export function saveSignedInAs(address: string): void {
  if (address) localStorage.setItem(WHO, address);
  else localStorage.removeItem(WHO);
}
