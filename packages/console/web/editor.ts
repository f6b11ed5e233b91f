// The policy editor: YAML with live validation by the same core code the server runs (loader and
// compiler, bundled for the browser), diagnostics at their line; an impact preview from the
// server's dry run (the connectivity diff) with the count of flows of the last hour the change
// would refuse; then apply.

import { compile, loadText } from '@palisade/core';
import type { Diagnostic } from '@palisade/core';
import type { Flow } from './api.js';
import { api, ApiFailure, endpointName } from './api.js';
import { h, table } from './dom.js';

const SAMPLE = `apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata:
  name: allow-web
  namespace: db
spec:
  selector: app == 'pg'
  types: [Ingress]
  ingress:
    - action: Allow
      protocol: TCP
      source:
        selector: app == 'web'
      destination:
        ports: [5432]
`;

export function validate(text: string): Diagnostic[] {
  const r = loadText(text, 'editor.yaml', { accessKinds: true });
  const d = [...r.diagnostics];
  if (!d.some((x) => x.severity === 'error')) d.push(...compile(r.resources).diagnostics());
  return d;
}

interface Change {
  from: string;
  to: string;
  protocol: string;
  port: number;
  change: 'newly-allowed' | 'newly-denied';
  before: { reason: string };
  after: { reason: string };
}

export function editorView(root: HTMLElement): void {
  const area = h('textarea', {
    id: 'policy-text',
    spellcheck: 'false',
    rows: '22',
    'aria-label': 'policy YAML',
    'aria-describedby': 'diagnostics',
  });
  area.value = sessionStorage.getItem('palisade.editor') ?? SAMPLE;
  const gutter = h('pre', { class: 'gutter', 'aria-hidden': 'true' });
  const diags = h('ul', { id: 'diagnostics', class: 'diagnostics', 'aria-live': 'polite' });
  const status = h('p', { id: 'validation-status', role: 'status' });
  const impact = h('section', { id: 'impact', 'aria-live': 'polite' });
  const run = () => {
    sessionStorage.setItem('palisade.editor', area.value);
    const d = validate(area.value);
    const errors = d.filter((x) => x.severity === 'error');
    const lines = area.value.split('\n').length;
    const bad = new Set(errors.map((x) => x.line));
    gutter.replaceChildren(
      ...Array.from({ length: lines }, (_, i) =>
        h(
          'span',
          { class: bad.has(i + 1) ? 'bad' : '' },
          `${bad.has(i + 1) ? '●' : ' '}${String(i + 1).padStart(3)}\n`,
        ),
      ),
    );
    diags.replaceChildren(
      ...d.map((x) =>
        h(
          'li',
          { class: x.severity },
          `line ${x.line}, column ${x.column}: ${x.severity} ${x.code}: ${x.message}`,
          x.hint ? h('span', { class: 'hint' }, ` — ${x.hint}`) : null,
        ),
      ),
    );
    status.textContent =
      errors.length === 0
        ? `valid: no errors${d.length ? ` (${d.length} warning(s))` : ''}`
        : `${errors.length} error(s)`;
    status.className = errors.length === 0 ? 'ok' : 'bad';
    preview.disabled = errors.length > 0;
    apply.disabled = errors.length > 0;
  };
  let timer: number | undefined;
  area.addEventListener('input', () => {
    clearTimeout(timer);
    timer = window.setTimeout(run, 120);
  });
  area.addEventListener('scroll', () => (gutter.scrollTop = area.scrollTop));
  const preview = h('button', { type: 'button', id: 'preview' }, 'Preview impact');
  const apply = h('button', { type: 'button', id: 'apply' }, 'Apply');
  preview.addEventListener('click', () => void previewImpact(area.value, impact));
  apply.addEventListener('click', () => void applyText(area.value, impact));
  root.replaceChildren(
    h('h1', {}, 'Policy editor'),
    h(
      'p',
      { class: 'muted' },
      'Validated as you type by the same loader and compiler as palisade validate and the server.',
    ),
    h('div', { class: 'editor' }, gutter, area),
    status,
    diags,
    h('div', { class: 'toolbar' }, preview, ' ', apply),
    impact,
  );
  run();
  root.dataset['ready'] = 'editor';
}

async function previewImpact(text: string, out: HTMLElement): Promise<void> {
  out.replaceChildren(h('p', {}, 'Computing the dry run…'));
  try {
    const r = await api<{
      connectivity?: { changes: Change[]; truncated: boolean; checks: number };
    }>('/api/v1/apply?dryRun=1&file=editor.yaml', {
      method: 'POST',
      body: text,
      type: 'application/yaml',
    });
    const changes = r.connectivity?.changes ?? [];
    const denied = changes.filter((c) => c.change === 'newly-denied');
    const flows = await api<{ records: Flow[] }>(
      '/api/v1/flows?since=1h&verdict=allow&limit=10000',
    );
    const pairs = new Set(denied.map((c) => `${c.from}|${c.to}|${c.protocol}|${c.port}`));
    const refused = flows.records
      .filter((f) =>
        pairs.has(
          `${endpointName(f.source)}|${endpointName(f.destination)}|${f.protocol}|${f.destination.port ?? ''}`,
        ),
      )
      .reduce((a, f) => a + f.count, 0);
    out.replaceChildren(
      h('h2', {}, 'Impact preview'),
      h(
        'p',
        { id: 'impact-summary' },
        `${denied.length} connection(s) newly refused, ${changes.length - denied.length} newly allowed; ${refused} observed flow(s) of the last hour would be refused.${r.connectivity?.truncated ? ' (truncated)' : ''}`,
      ),
      changes.length === 0
        ? h('p', {}, 'No change in connectivity.')
        : table(
            ['From', 'To', 'Port', 'Change', 'Before', 'After'],
            changes
              .slice(0, 200)
              .map((c) => [
                c.from,
                c.to,
                `${c.protocol}/${c.port}`,
                h(
                  'span',
                  { class: `verdict ${c.change === 'newly-denied' ? 'deny' : 'allow'}` },
                  c.change,
                ),
                c.before.reason,
                c.after.reason,
              ]),
          ),
    );
  } catch (e) {
    out.replaceChildren(failure(e));
  }
}

async function applyText(text: string, out: HTMLElement): Promise<void> {
  try {
    const r = await api<{
      results: { kind: string; namespace?: string; name: string; action: string }[];
    }>('/api/v1/apply?file=editor.yaml', {
      method: 'POST',
      body: text,
      type: 'application/yaml',
    });
    out.replaceChildren(
      h('h2', {}, 'Applied'),
      h(
        'ul',
        {},
        ...r.results.map((x) =>
          h('li', {}, `${x.kind} ${x.namespace ? `${x.namespace}/` : ''}${x.name} ${x.action}`),
        ),
      ),
    );
  } catch (e) {
    out.replaceChildren(failure(e));
  }
}

function failure(e: unknown): HTMLElement {
  if (e instanceof ApiFailure) {
    const b = e.body as { diagnostics?: Diagnostic[]; hint?: string };
    return h(
      'div',
      { class: 'error', role: 'alert' },
      h('p', {}, `${e.code}: ${e.message}`),
      b.hint ? h('p', { class: 'hint' }, b.hint) : null,
      ...(b.diagnostics ?? []).map((d) =>
        h('p', {}, `line ${d.line}, column ${d.column}: ${d.code}: ${d.message}`),
      ),
    );
  }
  return h('p', { class: 'error', role: 'alert' }, String(e));
}
