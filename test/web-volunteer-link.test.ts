import type { Browser, BrowserContext } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fromHex, personalSign } from '../shared/identity/index.js';
import { ensureWebBuilt } from './helpers/build-web.js';
import { startTestCoordinator, type TestCoordinator, testStore } from './helpers/cluster.js';
import { testIdentity } from './helpers/identities.js';
import {
  horizontalOverflow,
  launchChromium,
  screenshot,
  textOf,
  unnamedControls,
  waitUntil,
} from './helpers/web-browser.js';

/**
 * The volunteer page's "Link to wallet": a real EIP-1193 provider object injected as window.ethereum, whose
 * personal_sign is answered in Node with a known test key (page.exposeFunction), against a real coordinator.
 */
describe('volunteer page: link the browser key to a wallet', () => {
  let c: TestCoordinator;
  let browser: Browser;
  let origin: string;
  const wallet = testIdentity('volunteer-link-wallet');
  const contexts: BrowserContext[] = [];

  beforeAll(async () => {
    await ensureWebBuilt();
    c = await startTestCoordinator(testStore('pglite'));
    await c.credits.sweeper.stop();
    origin = c.url.replace('127.0.0.1', 'localhost');
    browser = await launchChromium();
  });
  afterAll(async () => {
    for (const ctx of contexts) await ctx.close().catch(() => {});
    await browser?.close();
    await c?.destroy();
  });

  async function newContext(withWallet: boolean) {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    contexts.push(context);
    const signed: string[] = [];
    if (withWallet) {
      await context.exposeFunction('__testWalletSign', (dataHex: string, address: string) => {
        if (address.toLowerCase() !== wallet.address.toLowerCase()) throw new Error(`unknown account ${address}`);
        const bytes = fromHex(dataHex);
        signed.push(new TextDecoder().decode(bytes));
        return personalSign(bytes, wallet.privateKey);
      });
      await context.addInitScript((address: string) => {
        const w = window as unknown as {
          ethereum: unknown;
          __testWalletSign: (data: string, address: string) => Promise<string>;
        };
        w.ethereum = {
          isTestWallet: true,
          request: async ({ method, params }: { method: string; params?: unknown[] }) => {
            if (method === 'eth_requestAccounts' || method === 'eth_accounts') return [address.toLowerCase()];
            if (method === 'personal_sign') return w.__testWalletSign(String(params?.[0]), String(params?.[1]));
            throw Object.assign(new Error(`unsupported method ${method}`), { code: 4200 });
          },
        };
      }, wallet.address);
    }
    const page = await context.newPage();
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(`${origin}/`);
    return { page, signed, errors };
  }

  it('without a wallet offers no link; with one, links, moves the credit and shows the wallet', async () => {
    const bare = await newContext(false);
    await bare.page.getByRole('heading', { name: 'Wallet' }).waitFor();
    expect(await bare.page.getByRole('button', { name: 'Link to wallet' }).count()).toBe(0);

    const { page, signed, errors } = await newContext(true);
    const local = await waitUntil('the local key', async () =>
      page.getByRole('textbox', { name: 'Wallet address credits go to' }).inputValue(),
    );
    // The local key has earned something: 0.5 credit vested, 0.25 pending.
    const jobId = 'browser-link-job';
    await c.ledger.escrowJob(jobId, c.requester.address, 1_000_000);
    await c.ledger.creditUnit({ jobId, resultId: `${jobId}-1`, worker: local, price: 500_000, vestAt: 0 });
    await c.ledger.vestDue(Date.now());
    await c.ledger.creditUnit({
      jobId,
      resultId: `${jobId}-2`,
      worker: local,
      price: 250_000,
      vestAt: Date.now() + 600_000,
    });
    await waitUntil('the local balance', async () => (await textOf(page, 'credit-vested')) === '0.500000');

    const button = page.getByRole('button', { name: 'Link to wallet' });
    expect(await button.isEnabled()).toBe(true);
    expect(await unnamedControls(page)).toEqual([]);
    await button.click();
    await page.getByTestId('linked-wallet').waitFor({ timeout: 15_000 });
    expect(await textOf(page, 'linked-wallet')).toContain(wallet.address);
    // The wallet signed exactly one link message naming the browser key and itself.
    expect(signed).toHaveLength(1);
    expect(signed[0]).toContain(`From: ${local}`);
    expect(signed[0]).toContain(`To: ${wallet.address}`);

    expect(await c.ledger.balances(local)).toMatchObject({ pending: 0, vested: 0 });
    expect(await c.ledger.balances(wallet.address)).toMatchObject({ pending: 250_000, vested: 500_000 });
    // The page shows the wallet's balance now, and the link survives a reload.
    await waitUntil('the wallet balance', async () => (await textOf(page, 'credit-pending')) === '0.250000');
    await page.reload();
    await page.getByTestId('linked-wallet').waitFor({ timeout: 15_000 });
    expect(await page.getByRole('button', { name: 'Link to wallet' }).count()).toBe(0);
    await waitUntil(
      'the wallet balance after reload',
      async () => (await textOf(page, 'credit-vested')) === '0.500000',
    );
    await screenshot(page, 'volunteer-linked-wallet');
    await page.setViewportSize({ width: 375, height: 800 });
    expect(await horizontalOverflow(page)).toBe(0);
    await screenshot(page, 'volunteer-linked-wallet-375');
    expect(errors).toEqual([]);
    expect((await c.ledger.checkIntegrity()).ok).toBe(true);
  });

  it('without an extension, links with a signature made elsewhere and pasted in', async () => {
    const other = testIdentity('volunteer-paste-wallet');
    const mallory = testIdentity('mallory');
    const { page, errors } = await newContext(false);
    const local = await waitUntil('the local key', async () =>
      page.getByRole('textbox', { name: 'Wallet address credits go to' }).inputValue(),
    );
    await page.getByRole('button', { name: 'Link with a pasted signature' }).click();
    await page.getByRole('textbox', { name: 'Address of the wallet to link' }).fill(other.address.toLowerCase());
    await page.getByRole('button', { name: 'Prepare message' }).click();
    const box = page.getByRole('textbox', { name: 'Message for the wallet to sign (personal_sign)' });
    await box.waitFor();
    const message = await box.inputValue();
    expect(message).toContain(`From: ${local}`);
    expect(message).toContain(`To: ${other.address}`);
    expect(await unnamedControls(page)).toEqual([]);

    // A signature by the wrong key is refused and said.
    const signature = page.getByRole('textbox', { name: "The wallet's signature" });
    await signature.fill(personalSign(message, mallory.privateKey));
    await page.getByRole('button', { name: 'Link with this signature' }).click();
    await page.getByRole('alert').waitFor();
    expect(await page.getByRole('alert').textContent()).toMatch(/wrong_signer/);
    expect(await c.ledger.link(local)).toBeNull();

    // The same message signed by the wallet links (the refused attempt did not spend the nonce).
    await signature.fill(personalSign(message, other.privateKey));
    await page.getByRole('button', { name: 'Link with this signature' }).click();
    await page.getByTestId('linked-wallet').waitFor({ timeout: 15_000 });
    expect(await textOf(page, 'linked-wallet')).toContain(other.address);
    expect((await c.ledger.link(local))?.to).toBe(other.address);
    expect(await page.getByRole('button', { name: 'Link with a pasted signature' }).count()).toBe(0);
    expect(errors).toEqual([]);
  });
});
