import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { type Browser, type BrowserContext, chromium, type Page } from 'playwright-core';

/**
 * Headless Chromium for the web tests: WebGPU on SwiftShader (a real WebGPU implementation on the CPU), pages
 * served from http://localhost so they are secure contexts. Collects console errors so tests can assert none.
 */
export const CHROMIUM_ARGS = [
  '--headless=new',
  '--no-sandbox',
  '--enable-unsafe-webgpu',
  '--use-webgpu-adapter=swiftshader',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];

export const RESULTS_DIR = join(process.cwd(), 'test-results');

export function launchChromium(): Promise<Browser> {
  return chromium.launch({ executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium', args: CHROMIUM_ARGS });
}

export interface WatchedPage {
  page: Page;
  context: BrowserContext;
  /** Console errors and uncaught exceptions, in order. */
  errors: string[];
  /** Errors matching these are expected for a while (e.g. refused connections while the coordinator is down). */
  tolerate: RegExp[];
}

export async function openPage(browser: Browser, url: string, width = 1280, height = 900): Promise<WatchedPage> {
  const context = await browser.newContext({ viewport: { width, height } });
  const page = await context.newPage();
  const watched: WatchedPage = { page, context, errors: [], tolerate: [] };
  const note = (text: string) => {
    if (!watched.tolerate.some((r) => r.test(text))) watched.errors.push(text);
  };
  page.on('console', (m) => {
    if (m.type() === 'error') note(`console: ${m.text()} (${m.location().url})`);
  });
  page.on('pageerror', (e) => note(`pageerror: ${e.message}`));
  await page.goto(url);
  return watched;
}

export async function screenshot(page: Page, name: string): Promise<string> {
  mkdirSync(RESULTS_DIR, { recursive: true });
  const path = join(RESULTS_DIR, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  return path;
}

/** Page width overflow: > 0 means something sticks out sideways (a layout bug at this viewport). */
export function horizontalOverflow(page: Page): Promise<number> {
  return page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
}

/**
 * Interactive elements without an accessible name, from Playwright's ARIA snapshot (e.g. "- button" with no
 * name after it). Frames are not entered.
 */
export async function unnamedControls(page: Page): Promise<string[]> {
  const snap = await page.locator('body').ariaSnapshot();
  return snap
    .split('\n')
    .map((l) => l.trim())
    .filter((l) =>
      /^- (button|textbox|slider|checkbox|combobox|spinbutton|radio|link|progressbar)(\s*\[[^\]]*\])?:?\s*$/.test(l),
    );
}

export async function textOf(page: Page, testId: string): Promise<string> {
  return ((await page.getByTestId(testId).first().textContent()) ?? '').trim();
}

export async function numberOf(page: Page, testId: string): Promise<number> {
  return Number(await textOf(page, testId));
}

export async function waitUntil<T>(
  what: string,
  fn: () => Promise<T | null | undefined | false>,
  timeoutMs = 60_000,
  everyMs = 200,
): Promise<T> {
  const end = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < end) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, everyMs));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${String(last)}` : ''}`);
}
