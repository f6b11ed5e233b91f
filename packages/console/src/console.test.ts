// The console in a real browser (Debian chromium driven by playwright-core) against a live
// `palisade server` (HTTPS, SQLite store, its flow database) with policies applied and flows
// reported by a node: sign-in, the service graph and an edge's flows with the deciding rule, the
// policy board in evaluation order with hits and staged policies marked, the editor's live
// validation at the right line and the impact preview, the flow and audit logs with filters, the
// endpoint page. Screenshots go to a temp dir; assertions are on what a person sees.

import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import type { RunningServer } from '@palisade/controlplane';
import { runServer } from '@palisade/controlplane';
import { consoleRoute } from './index.js';

const CHROMIUM = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => existsSync(p));
const skip = CHROMIUM ? false : 'needs Debian chromium (apt-get install chromium)';

const RESOURCES = `
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Namespace
metadata: {name: db}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec: {serviceAccountName: web, containers: [{name: c}]}
status: {podIP: 10.9.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: other, namespace: shop, labels: {app: other}}
spec: {containers: [{name: c}]}
status: {podIP: 10.9.0.3}
---
apiVersion: v1
kind: Pod
metadata: {name: pg, namespace: db, labels: {app: pg}}
spec: {containers: [{name: c, ports: [{name: sql, containerPort: 5432}]}]}
status: {podIP: 10.9.0.4}
---
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: security}
spec: {order: 100}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: security.db-guard}
spec:
  tier: security
  order: 10
  selector: app == 'pg'
  types: [Ingress]
  ingress:
    - action: Pass
      source: {selector: app == 'web'}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: allow-web, namespace: db}
spec:
  order: 50
  selector: app == 'pg'
  types: [Ingress]
  ingress:
    - action: Allow
      protocol: TCP
      source: {selector: app == 'web', namespaceSelector: all()}
      destination: {ports: [5432]}
---
apiVersion: projectcalico.org/v3
kind: StagedNetworkPolicy
metadata: {name: lockdown, namespace: db}
spec:
  selector: app == 'pg'
  types: [Ingress]
  ingress: [{action: Deny}]
`;

function flows(now: number) {
  const ep = (ns: string, name: string, ip: string, labels: Record<string, string>) => ({
    ip,
    namespace: ns,
    name,
    labels,
  });
  const web = ep('shop', 'web', '10.9.0.2', { app: 'web' });
  const other = ep('shop', 'other', '10.9.0.3', { app: 'other' });
  const pg = { ...ep('db', 'pg', '10.9.0.4', { app: 'pg' }), port: 5432 };
  const base = {
    start: new Date(now - 8000).toISOString(),
    end: new Date(now - 1000).toISOString(),
    protocol: 'TCP',
    packets: 3,
    bytes: 180,
  };
  return [
    {
      ...base,
      source: web,
      destination: pg,
      verdict: 'allow',
      point: 'kernel',
      direction: 'ingress',
      provenance: { kind: 'rule', tier: 'default', policy: 'db/allow-web', rule: 0 },
      staged: [{ policy: 'db/lockdown', verdict: 'deny' }],
      count: 12,
    },
    {
      ...base,
      source: other,
      destination: pg,
      verdict: 'deny',
      point: 'kernel',
      direction: 'ingress',
      provenance: {
        kind: 'tier-default',
        tier: 'security',
        reason: 'default deny of tier security',
      },
      // As the node's engine reports it for a kernel record (dataplane flows/staged.ts).
      staged: [{ policy: 'db/lockdown', tier: 'default', verdict: 'deny', rule: 0 }],
      count: 4,
    },
    // A node's text is shown as text: markup in a label or a path must not become markup.
    {
      ...base,
      source: {
        ip: '10.9.0.9',
        namespace: 'evil',
        name: 'x',
        labels: { app: '<img src=x onerror=alert(1)>' },
      },
      destination: pg,
      method: 'GET',
      path: '/<script>alert(2)</script>',
      verdict: 'allow',
      point: 'l7',
      direction: 'ingress',
      provenance: { kind: 'no-policy' },
      packets: 0,
      bytes: 0,
      count: 1,
    },
    {
      ...base,
      source: web,
      destination: pg,
      method: 'DELETE',
      path: '/admin',
      verdict: 'deny',
      point: 'l7',
      direction: 'ingress',
      provenance: { kind: 'rule', tier: 'default', policy: 'db/allow-web', rule: 1 },
      packets: 0,
      bytes: 0,
      count: 1,
    },
  ];
}

describe('the web console in a real browser', { skip, timeout: 180_000 }, () => {
  let server: RunningServer;
  let browser: Browser;
  let page: Page;
  let dir: string;
  let shots: string;
  let admin: string;

  const shot = async (name: string) => {
    const p = join(shots, `${name}.png`);
    await page.screenshot({ path: p, fullPage: true });
    assert.ok(statSync(p).size > 1000, `${name} screenshot is empty`);
  };
  const ready = async (view: string) => {
    await page.waitForSelector(`#app[data-ready="${view}"], #app[data-ready="error"]`, {
      timeout: 30_000,
    });
    const got = await page.getAttribute('#app', 'data-ready');
    assert.equal(got, view, await page.innerText('main'));
  };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), `palisade-console-${process.pid}-`));
    // PALISADE_CONSOLE_SHOTS=DIR keeps the screenshots there (for a look); by default they go to
    // the test's temp dir, removed afterwards.
    shots = process.env['PALISADE_CONSOLE_SHOTS'] ?? join(dir, 'screenshots');
    server = await runServer({
      listen: '127.0.0.1:0',
      dataDir: join(dir, 'data'),
      insecurePlaintext: false,
      rateLimit: false,
      staticRoute: consoleRoute,
      log: () => undefined,
      say: () => undefined,
    });
    admin = readFileSync(join(dir, 'data', 'admin.token'), 'utf8').trim();
    const applied = await server.api.inject({
      method: 'POST',
      url: '/api/v1/apply',
      token: admin,
      body: RESOURCES,
      headers: { 'content-type': 'application/yaml' },
    });
    assert.equal(applied.status, 200, applied.body);
    const tok = await server.api.inject({
      method: 'POST',
      url: '/api/v1/tokens',
      token: admin,
      body: { node: 'node-1' },
    });
    const node = (tok.json() as { token: string }).token;
    const ing = await server.api.inject({
      method: 'POST',
      url: '/api/v1/flows',
      token: node,
      body: {
        records: flows(Date.now()),
        shed: [{ reason: 'buffer-full', count: 3, point: 'kernel' }],
      },
    });
    assert.equal(ing.status, 200, ing.body);
    // A refused attempt for the audit log.
    await server.api.inject({
      method: 'POST',
      url: '/api/v1/flows',
      token: admin,
      body: { records: [] },
    });
    const { chromium } = await import('playwright-core');
    browser = await chromium.launch({
      executablePath: CHROMIUM ?? 'chromium',
      args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
      headless: true,
    });
    const ctx = await browser.newContext({
      ignoreHTTPSErrors: true,
      viewport: { width: 1400, height: 1000 },
    });
    page = await ctx.newPage();
    page.on('dialog', (d) => {
      throw new Error(`a dialog opened: ${d.message()}`);
    });
  });
  after(async () => {
    await browser?.close();
    await server?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('sign-in refuses a wrong token with a visible message, then the graph shows the endpoints and a refused edge', async () => {
    await page.goto(`${server.url}/`);
    await page.fill('#token', 'not-a-token');
    await page.click('button[type=submit]');
    await page.waitForSelector('[role=alert]');
    assert.match(await page.innerText('[role=alert]'), /AUTH_ERR_INVALID_TOKEN/);
    await page.fill('#token', admin);
    await page.click('button[type=submit]');
    await ready('graph');
    const text = await page.innerText('main');
    assert.match(text, /Service graph/);
    assert.match(text, /4 endpoints · 4 observed edges · 1 allowed by policy/);
    assert.match(text, /evil · <img src=x onerror=alert\(1\)>/);
    assert.equal(await page.locator('main img').count(), 0);
    assert.match(text, /shop · other, web/);
    assert.equal(await page.locator('path.edge.deny').count(), 2);
    assert.equal(await page.locator('path.edge.allow').count(), 2);
    assert.match(await page.innerText('#shed'), /shed 3/);
    await shot('graph');
  });

  test('clicking a refused edge lists its flows with the rule that decided each', async () => {
    await page.locator('circle.edge-handle.deny[aria-label^="shop/other"]').click();
    await page.waitForSelector('#edge-detail table');
    const d = await page.innerText('#edge-detail');
    assert.match(d, /shop\/other → db\/pg/);
    assert.match(d, /TCP\/5432/);
    assert.match(d, /refused/);
    assert.match(d, /default deny of tier security/);
    // What the staged policy would have done, beside the real verdict.
    assert.match(d, /db\/lockdown would deny \(rule 0\)/);
    await shot('graph-edge');
  });

  test('what policy allows is drawn apart from observed flows, with a legend; a policy edge opens the rule that allows it and the flows on that pair', async () => {
    await page.click('nav a[href="#/graph"]');
    await ready('graph');
    // One pair is allowed by a rule (web → pg on 5432); the pairs no policy restricts are only
    // counted; web and other are selected by no ingress policy and drawn hollow.
    assert.equal(await page.locator('#graph line.edge.policy').count(), 1);
    assert.equal(await page.locator('g.node.open').count(), 2);
    const legend = await page.innerText('#graph-legend');
    for (const t of [
      /observed flows, allowed/,
      /observed flows, refused/,
      /allowed by policy/,
      /no ingress policy: any source may connect/,
      /4 pair\(s\) no policy restricts are not drawn/,
    ])
      assert.match(legend, t);
    // Three kinds of edge, three colours a person can tell apart (and dashes for two of them).
    const style = (sel: string) =>
      page
        .locator(sel)
        .first()
        .evaluate((el) => {
          // (The test's types have no DOM: the browser's function, typed here.)
          const c = (
            globalThis as unknown as {
              getComputedStyle: (e: unknown) => { stroke: string; strokeDasharray: string };
            }
          ).getComputedStyle(el);
          return `${c.stroke} ${c.strokeDasharray}`;
        });
    const looks = new Set([
      await style('#graph path.edge.allow'),
      await style('#graph path.edge.deny'),
      await style('#graph line.edge.policy'),
    ]);
    assert.equal(looks.size, 3, [...looks].join(' | '));
    assert.match(
      await page.innerText('#policy-edges'),
      /shop\/web\s+db\/pg\s+TCP\/5432\s+db\/allow-web rule 0/,
    );
    await page.locator('rect.edge-handle.policy[aria-label^="shop/web → db/pg"]').click();
    await page.waitForSelector('#policy-decision');
    const d = await page.innerText('#edge-detail');
    assert.match(d, /shop\/web → db\/pg: allowed by policy/);
    assert.match(
      d,
      /Policy allows TCP\/5432; decided at the destination's ingress by db\/allow-web rule 0/,
    );
    // The flows seen on that pair, each with its own deciding rule.
    assert.match(
      d,
      /TCP\/5432\s+allowed\s+kernel\s+db\/allow-web rule 0 \(tier default\)\s+db\/lockdown would deny\s+12/,
    );
    assert.match(d, /DELETE \/admin\s+refused\s+l7\s+db\/allow-web rule 1/);
    await shot('graph-policy-edge');
    // The rule is a link to the policy board, focused on that policy.
    await page.locator('#policy-decision a').click();
    await ready('board');
    assert.match(page.url(), /#\/policies\?focus=db%2Fallow-web/);
  });

  test('the policy board lists tiers and policies in evaluation order with hits, staged policies marked', async () => {
    await page.click('nav a[href="#/policies"]');
    await ready('board');
    const tiers = await page.locator('section.tier h2').allInnerTexts();
    assert.deepEqual(
      tiers.map((t) => /Tier (\S+)/.exec(t)?.[1]),
      ['security', 'default'],
    );
    const def = await page.innerText('section.tier:nth-of-type(2)');
    assert.match(def, /db\/allow-web\s+NetworkPolicy\s+50/);
    assert.match(def, /db\/allow-web[\s\S]*?\t12\t1/);
    assert.match(def, /db\/lockdown\s*STAGED/);
    assert.match(
      await page.innerText('section.tier:nth-of-type(1)'),
      /Default deny of tier security: 4 refused/,
    );
    await shot('policy-board');
  });

  test('the editor validates in the browser at the right line and previews the impact on observed flows', async () => {
    await page.click('nav a[href="#/editor"]');
    await ready('editor');
    const bad = `apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata:
  name: allow-web
  namespace: db
spec:
  selectr: app == 'pg'
`;
    await page.fill('#policy-text', bad);
    await page
      .locator('#validation-status')
      .filter({ hasText: /^\d+ error/ })
      .waitFor();
    const diag = await page.innerText('#diagnostics');
    assert.match(diag, /line 7, column 3: error POLICY_ERR_UNKNOWN_FIELD/);
    assert.match(diag, /selector/);
    assert.equal(await page.isDisabled('#preview'), true);
    await shot('editor-invalid');
    // Removing the allow: web → pg:5432 becomes refused, and 12 flows of the last hour with it.
    const tighten = `apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata:
  name: allow-web
  namespace: db
spec:
  order: 50
  selector: app == 'pg'
  types: [Ingress]
  ingress:
    - action: Allow
      protocol: TCP
      source: {selector: app == 'nobody'}
      destination: {ports: [5432]}
`;
    await page.fill('#policy-text', tighten);
    await page
      .locator('#validation-status')
      .filter({ hasText: /^valid/ })
      .waitFor();
    await page.click('#preview');
    await page.waitForSelector('#impact-summary', { timeout: 30_000 });
    const impact = await page.innerText('#impact');
    assert.match(impact, /[1-9]\d* connection\(s\) newly refused/);
    assert.match(impact, /12 observed flow\(s\) of the last hour would be refused/);
    assert.match(impact, /shop\/web\s+db\/pg\s+TCP\/5432\s+newly-denied/);
    await shot('editor-impact');
  });

  test('the flow log filters by verdict and point and names the deciding rule; labels are shown as text', async () => {
    await page.goto(`${server.url}/console/#/flows?verdict=deny`);
    await ready('flows');
    const rows = await page.locator('#flow-table tbody tr').allInnerTexts();
    assert.equal(rows.length, 2);
    for (const r of rows) assert.match(r, /refused/);
    assert.ok(
      rows.some((r) =>
        /DELETE \/admin\s+l7\s+refused\s+db\/allow-web rule 1 \(tier default\)/.test(r),
      ),
    );
    await page.selectOption('select[name=point]', 'kernel');
    await page.click('form.filters button[type=submit]');
    await ready('flows');
    assert.equal(await page.locator('#flow-table tbody tr').count(), 1);
    const [kernelRow] = await page.locator('#flow-table tbody tr').allInnerTexts();
    assert.match(kernelRow ?? '', /shop\/other[\s\S]*db\/lockdown would deny \(rule 0\)/);
    await shot('flow-log');
  });

  test('the audit log shows the apply and the refused flow report, filterable by outcome', async () => {
    await page.click('nav a[href="#/audit"]');
    await ready('audit');
    const all = await page.innerText('#audit-table');
    assert.match(all, /apply/);
    await page.selectOption('select[name=outcome]', 'refused');
    await page.click('form.filters button[type=submit]');
    await ready('audit');
    const refused = await page.innerText('#audit-table');
    assert.match(refused, /flows\.report/);
    assert.match(refused, /refused 403/);
    assert.doesNotMatch(refused, /\tapply\t/);
    await shot('audit-log');
  });

  test('the endpoint page shows labels as text, the identity, the policies in evaluation order and the L7 decisions', async () => {
    await page.goto(`${server.url}/console/#/endpoint/db/pg`);
    await ready('endpoint');
    const t = await page.innerText('main');
    assert.match(t, /Endpoint db\/pg/);
    assert.match(t, /spiffe:\/\/cluster\.local\/ns\/db\/sa\/default/);
    assert.match(t, /app=pg/);
    const ingress = await page.innerText('.two section:first-child');
    assert.ok(
      ingress.indexOf('db-guard') >= 0 &&
        ingress.indexOf('db-guard') < ingress.indexOf('allow-web'),
      ingress,
    );
    assert.match(t, /DELETE \/admin\s+refused/);
    await page.goto(`${server.url}/console/#/flows?point=l7&verdict=allow`);
    await ready('flows');
    assert.match(await page.innerText('#flow-table'), /GET \/<script>alert\(2\)<\/script>/);
    assert.equal(await page.locator('main script, main img').count(), 0);
    await shot('endpoint');
  });

  test('the assets carry a strict content security policy, and unknown paths are not served', async () => {
    const r = await fetchHead(server, '/console/');
    assert.match(r.csp, /script-src 'self'/);
    assert.match(r.csp, /frame-ancestors 'none'/);
    const missing = await server.api.inject({ method: 'GET', url: '/console/../admin.token' });
    assert.equal(missing.status, 404);
  });
});

async function fetchHead(server: RunningServer, path: string): Promise<{ csp: string }> {
  const r = await server.api.inject({ method: 'GET', url: path });
  return { csp: r.headers['content-security-policy'] ?? '' };
}
