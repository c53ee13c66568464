/**
 * The widget frame's consent gate. The frame (/widget/frame, coordinator origin) never trains on its own account of
 * being loaded: a page can frame it without the tag, invisibly, and would then spend every visitor's device.
 *
 * Handshake: the frame posts {type: 'swarmgrad:ready', nonce} to its parent; the tag, which opened the frame after the
 * visitor pressed Contribute in its card, answers {type: 'swarmgrad:consent', nonce} to the coordinator's origin only.
 * The frame accepts it only from window.parent (event.source), with its own nonce, once.
 *
 * What a framing page can fake: the handshake itself, since it IS the parent (a page that embeds the frame without
 * the tag can post the same message). What it cannot fake: the frame's visibility. The frame trains only while it is
 * on screen, at least MIN_WIDTH x MIN_HEIGHT px and, where the browser reports it (IntersectionObserver v2,
 * Chromium), not transparent, transformed or covered by other content; otherwise it pauses ('obscured'). So a faked
 * handshake buys at most a visible card that says what runs, for which account, with its own Pause button, and the
 * tab pauses when hidden. A bare iframe without the handshake never starts at all.
 */

export const MIN_WIDTH = 120;
export const MIN_HEIGHT = 60;

export interface ConsentMessage {
  type: 'swarmgrad:consent';
  nonce: string;
}

/** Resolves when the parent sends consent for this nonce; announces readiness to it until then. */
export function awaitConsent(nonce: string, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const onMessage = (ev: MessageEvent) => {
      const d = ev.data as Partial<ConsentMessage> | null;
      if (ev.source !== window.parent || d?.type !== 'swarmgrad:consent' || d.nonce !== nonce) return;
      done();
      resolve();
    };
    // The tag may attach its listener after the frame loads: repeat 'ready' until answered (cheap, 2 per second).
    const announce = () => window.parent.postMessage({ type: 'swarmgrad:ready', nonce }, '*');
    const timer = setInterval(announce, 500);
    const done = () => {
      clearInterval(timer);
      removeEventListener('message', onMessage);
    };
    signal.addEventListener('abort', done);
    addEventListener('message', onMessage);
    announce();
  });
}

/**
 * Calls `onChange(visible)` whenever the frame's visibility changes (see the module comment). Returns a disposer.
 * The first report comes from the observer's first callback; until then the frame counts as not visible.
 */
export function watchVisibility(target: Element, onChange: (visible: boolean) => void): () => void {
  const v2 = typeof IntersectionObserverEntry !== 'undefined' && 'isVisible' in IntersectionObserverEntry.prototype;
  let last: boolean | null = null;
  const report = (visible: boolean) => {
    if (visible === last) return;
    last = visible;
    onChange(visible);
  };
  const options = { threshold: [0, 0.5, 1], ...(v2 ? { trackVisibility: true, delay: 200 } : {}) };
  const io = new IntersectionObserver((entries) => {
    const e = entries[entries.length - 1] as IntersectionObserverEntry & { isVisible?: boolean };
    // Inside the frame, the window is the iframe's box: a 1x1 frame is too small to be seen.
    const big = window.innerWidth >= MIN_WIDTH && window.innerHeight >= MIN_HEIGHT;
    report(big && e.intersectionRatio >= 0.5 && (v2 ? e.isVisible === true : true));
  }, options as IntersectionObserverInit);
  io.observe(target);
  return () => io.disconnect();
}
