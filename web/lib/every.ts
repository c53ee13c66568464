/**
 * Runs `fn` now and then every `ms` milliseconds; returns the stop function, so a component can write
 * `onMount(() => every(5000, refresh))` and Svelte stops it on destroy.
 */
export function every(ms: number, fn: () => unknown): () => void {
  void fn();
  const timer = setInterval(() => void fn(), ms);
  return () => clearInterval(timer);
}
