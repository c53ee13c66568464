/**
 * The swarmgrad embed tag: <script src="https://COORDINATOR/widget.js" data-account="0x…" async></script>.
 *
 * Before consent it only draws a small card in a shadow root (so host CSS neither restyles it nor leaks into it):
 * what it does, how much of the device it uses, and a consent button. Nothing is fetched or computed. After
 * consent it opens an iframe on the coordinator's origin (/widget/frame), where tfjs loads and trains: the host
 * page can neither tamper with the training nor read its storage. A Stop button stays visible outside the iframe.
 *
 * Optional attributes: data-intensity (10..100, default 50), data-position ("inline" to render where the tag
 * sits instead of a corner card).
 */
(() => {
  const script = document.currentScript as HTMLScriptElement | null;
  if (!script?.src) return;
  const origin = new URL(script.src).origin;
  const account = (script.dataset.account ?? '').trim();
  const accountOk = /^0x[0-9a-fA-F]{40}$/.test(account);
  const rawIntensity = Number(script.dataset.intensity ?? 50);
  const intensity = Number.isFinite(rawIntensity) ? Math.min(100, Math.max(10, Math.round(rawIntensity))) : 50;
  const inline = script.dataset.position === 'inline';

  const host = document.createElement('div');
  host.setAttribute('data-swarmgrad-widget', '');
  const root = host.attachShadow({ mode: 'open' });
  root.innerHTML = `<style>
:host{all:initial}
.card{font:14px/1.4 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#0f172a;background:#fff;border:1px solid #cbd5e1;border-radius:10px;box-shadow:0 4px 16px rgba(15,23,42,.15);padding:12px;width:min(340px,calc(100vw - 24px));box-sizing:border-box}
.fixed{position:fixed;right:12px;bottom:12px;z-index:2147483647}
h2{font-size:15px;margin:0 0 6px}
p{margin:0 0 8px}
.muted{color:#475569;font-size:12px}
.row{display:flex;gap:8px;flex-wrap:wrap;align-items:center}
button{font:inherit;border-radius:6px;padding:6px 12px;cursor:pointer;border:1px solid #1d4ed8;background:#1d4ed8;color:#fff;min-height:34px}
button.secondary{background:#fff;color:#1d4ed8}
button.stop{background:#b91c1c;border-color:#b91c1c}
button:focus-visible{outline:3px solid #f59e0b;outline-offset:2px}
iframe{border:0;width:100%;height:240px;display:block;margin:6px 0}
.head{display:flex;justify-content:space-between;align-items:center;gap:8px}
</style><div class="card${inline ? '' : ' fixed'}" role="region" aria-label="swarmgrad compute sharing"></div>`;
  const card = root.querySelector('.card') as HTMLDivElement;
  let frame: HTMLIFrameElement | null = null;

  const el = <K extends keyof HTMLElementTagNameMap>(tag: K, props: Partial<HTMLElementTagNameMap[K]> = {}) =>
    Object.assign(document.createElement(tag), props);

  function button(label: string, cls: string, onClick: () => void): HTMLButtonElement {
    const b = el('button', { type: 'button', textContent: label, className: cls });
    b.addEventListener('click', onClick);
    return b;
  }

  function consentView(): void {
    card.replaceChildren(
      el('h2', { textContent: 'Share spare compute?' }),
      el('p', {
        textContent: accountOk
          ? `This site can use part of your device to train machine-learning models with swarmgrad. It uses about ${intensity}% of one processor or graphics core, only while this tab is visible, and pauses on low battery. Nothing runs unless you agree.`
          : 'This swarmgrad widget is misconfigured (data-account must be a 0x address), so it cannot run.',
      }),
      el('p', {
        className: 'muted',
        textContent: accountOk ? `Credits go to ${account.slice(0, 6)}…${account.slice(-4)}.` : '',
      }),
    );
    if (!accountOk) return;
    const row = el('div', { className: 'row' });
    row.append(
      button('Contribute', '', consent),
      button('No thanks', 'secondary', () => host.remove()),
    );
    card.append(row);
  }

  function consent(): void {
    const url = new URL('/widget/frame', origin);
    url.searchParams.set('account', account);
    url.searchParams.set('intensity', String(intensity));
    const f = el('iframe', { src: url.href, title: 'swarmgrad training status' });
    frame = f;
    // The consent handshake (web/widget/consent.ts): the frame trains only once this answers its 'ready', and only
    // while it is visibly on screen.
    const onReady = (ev: MessageEvent) => {
      const d = ev.data as { type?: string; nonce?: unknown } | null;
      if (ev.source !== f.contentWindow || d?.type !== 'swarmgrad:ready' || typeof d.nonce !== 'string') return;
      if (frame !== f) return removeEventListener('message', onReady);
      f.contentWindow?.postMessage({ type: 'swarmgrad:consent', nonce: d.nonce }, origin);
    };
    addEventListener('message', onReady);
    const head = el('div', { className: 'head' });
    head.append(el('h2', { textContent: 'Sharing compute' }), button('Stop', 'stop', stop));
    card.replaceChildren(head, frame);
  }

  function stop(): void {
    const f = frame;
    if (!f) return;
    frame = null;
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      removeEventListener('message', onMessage);
      f.remove();
      card.replaceChildren(
        el('h2', { textContent: 'Stopped' }),
        el('p', { textContent: 'Thank you. Nothing runs any more.' }),
        button('Start again', 'secondary', consent),
      );
    };
    // The frame releases its unit so it is reissued at once; if it does not answer quickly, removing it stops it.
    const onMessage = (ev: MessageEvent) => {
      if (ev.source === f.contentWindow && (ev.data as { type?: string })?.type === 'swarmgrad:stopped') finish();
    };
    addEventListener('message', onMessage);
    f.contentWindow?.postMessage({ type: 'swarmgrad:stop' }, origin);
    setTimeout(finish, 2000);
  }

  consentView();
  if (inline) script.after(host);
  else if (document.body) document.body.append(host);
  else addEventListener('DOMContentLoaded', () => document.body.append(host));
})();
