// Test support for the live demo's end-to-end test: the web console of a running demo in a real
// browser (Debian chromium driven by playwright-core), signed in with the token the demo printed,
// checked on what a person sees. Owns: those page checks. Must never: be imported by product
// code.

import assert from 'node:assert/strict';
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';

export const CHROMIUM = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) =>
  existsSync(p),
);

/**
 * The console of the running demo in chromium, signed in with the demo's token: what a person
 * sees on the graph, the flow log, the policy board and the audit log. Returns what was seen.
 */
export async function browseConsole(url: string, token: string, shots: string): Promise<string[]> {
  const { chromium } = await import('playwright-core');
  const browser = await chromium.launch({
    executablePath: CHROMIUM ?? 'chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
    headless: true,
  });
  const seen: string[] = [];
  try {
    const ctx = await browser.newContext({
      ignoreHTTPSErrors: true,
      viewport: { width: 1500, height: 1100 },
    });
    const page = await ctx.newPage();
    page.on('dialog', (d) => {
      throw new Error(`a dialog opened: ${d.message()}`);
    });
    const ready = async (view: string): Promise<void> => {
      await page.waitForSelector(`#app[data-ready="${view}"], #app[data-ready="error"]`, {
        timeout: 60_000,
      });
      assert.equal(
        await page.getAttribute('#app', 'data-ready'),
        view,
        await page.innerText('main'),
      );
    };
    const shot = async (name: string): Promise<void> => {
      const p = join(shots, `${name}.png`);
      await page.screenshot({ path: p, fullPage: true });
      assert.ok(statSync(p).size > 1000, `${name} screenshot is empty`);
      seen.push(p);
    };

    // Sign in with the read-only token the demo printed; the graph opens.
    await page.goto(url);
    await page.fill('#token', token);
    await page.click('button[type=submit]');
    await ready('graph');
    const graph = await page.innerText('main');
    assert.match(graph, /Service graph/);
    assert.match(graph, /\d+ endpoints · \d+ observed edges/);
    // The demo's namespaces, titled with their apps.
    assert.match(graph, /default · [^\n]*productpage/);
    assert.match(graph, /payments · /);
    assert.match(graph, /bank · /);
    assert.ok((await page.locator('path.edge.deny').count()) >= 1, 'refused edges are drawn');
    assert.ok((await page.locator('path.edge.allow').count()) >= 1, 'allowed edges are drawn');
    await shot('demo-graph');

    // The attacker's refused edge lists its flows with the rule that refused them (the kernel).
    await page.locator('circle.edge-handle.deny[aria-label^="default/attacker"]').first().click();
    await page.waitForSelector('#edge-detail table');
    const edge = await page.innerText('#edge-detail');
    assert.match(edge, /default\/attacker → /);
    assert.match(edge, /refused/);
    assert.match(edge, /kernel/);
    assert.match(
      edge,
      /default deny of tier default|security\.restricted-zone|security\.pci-isolation/,
    );
    await shot('demo-graph-attacker-edge');

    // The attacker refused in the kernel by the default deny of tier default, in the flow log.
    await page.goto(`${url}#/flows?verdict=deny&point=kernel&endpoint=default/attacker`);
    await ready('flows');
    const kernelRows = await page.locator('#flow-table tbody tr').allInnerTexts();
    assert.ok(
      kernelRows.some((r) =>
        /default\/attacker[\s\S]*kernel\s+refused\s+default deny of tier default/.test(r),
      ),
      kernelRows.slice(0, 10).join('\n'),
    );
    await shot('demo-flows-attacker-kernel');

    // An L7 403 with its policy: POST to ratings, refused by ratings-readers-get-only.
    await page.goto(`${url}#/flows?verdict=deny&point=l7`);
    await ready('flows');
    const l7Rows = await page.locator('#flow-table tbody tr').allInnerTexts();
    assert.ok(
      l7Rows.some((r) =>
        /POST \/ratings\S*\s+l7\s+refused\s+default\/ratings-readers-get-only/.test(r),
      ),
      l7Rows.slice(0, 10).join('\n'),
    );
    await shot('demo-flows-l7-403');

    // The policy board: tiers in order, the seeds' policies with their hits.
    await page.goto(`${url}#/policies`);
    await ready('board');
    const tiers = await page.locator('section.tier h2').allInnerTexts();
    assert.deepEqual(
      tiers.map((t) => /Tier (\S+)/.exec(t)?.[1]),
      ['security', 'platform', 'default'],
    );
    const board = await page.innerText('main');
    assert.match(board, /security\.restricted-zone/);
    assert.match(board, /security\.pci-isolation/);
    assert.match(board, /Default deny of tier default: [1-9]\d* refused/);
    await shot('demo-policy-board');

    // The audit log: the firewall change's apply and the platform team's refused attempt.
    await page.goto(`${url}#/audit`);
    await ready('audit');
    assert.match(await page.innerText('#audit-table'), /apply/);
    await page.selectOption('select[name=outcome]', 'refused');
    await page.click('form.filters button[type=submit]');
    await ready('audit');
    const refused = await page.innerText('#audit-table');
    assert.match(refused, /platform/);
    assert.match(refused, /refused 403/);
    await shot('demo-audit-refused');
    seen.push(graph.slice(0, 2000));
  } finally {
    await browser.close();
  }
  return seen;
}
