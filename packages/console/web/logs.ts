// The flow log (filters, live mode) and the audit log (filters), as tables.

import type { Flow } from './api.js';
import { api, endpointName } from './api.js';
import { h, table, when } from './dom.js';
import { ruleLink, stagedCell } from './graph.js';

function field(
  label: string,
  name: string,
  value: string,
  options?: readonly string[],
): HTMLLabelElement {
  const input = options
    ? h(
        'select',
        { name },
        ...options.map((o) => {
          const el = h('option', { value: o }, o === '' ? 'any' : o);
          if (o === value) el.selected = true;
          return el;
        }),
      )
    : h('input', { name, value, size: '14' });
  return h('label', {}, `${label} `, input);
}

function flowRow(f: Flow): (Node | string)[] {
  return [
    when(f.end),
    f.node,
    endpointName(f.source),
    `${endpointName(f.destination)}${f.destination.port !== undefined ? `:${f.destination.port}` : ''}`,
    f.protocol,
    f.method ? `${f.method} ${f.path ?? ''}` : '',
    f.point,
    h('span', { class: `verdict ${f.verdict}` }, f.verdict === 'deny' ? 'refused' : 'allowed'),
    ruleLink(f),
    stagedCell(f),
    String(f.count),
  ];
}

const FLOW_HEAD = [
  'Time',
  'Node',
  'Source',
  'Destination',
  'Proto',
  'L7',
  'Point',
  'Verdict',
  'Decided by',
  'Staged',
  'Count',
];

export async function flowLogView(
  root: HTMLElement,
  params: URLSearchParams,
  live: { stop?: () => void },
): Promise<void> {
  const keys = ['since', 'endpoint', 'namespace', 'policy', 'verdict', 'point'];
  const q = new URLSearchParams();
  for (const k of keys) {
    const v = params.get(k);
    if (v) q.set(k, v);
  }
  if (!q.has('since')) q.set('since', '1h');
  const form = h(
    'form',
    { class: 'filters', role: 'search', 'aria-label': 'flow filters' },
    field('Since', 'since', q.get('since') ?? '1h'),
    field('Endpoint', 'endpoint', q.get('endpoint') ?? ''),
    field('Namespace', 'namespace', q.get('namespace') ?? ''),
    field('Policy', 'policy', q.get('policy') ?? ''),
    field('Verdict', 'verdict', q.get('verdict') ?? '', ['', 'allow', 'deny']),
    field('Point', 'point', q.get('point') ?? '', ['', 'kernel', 'l7']),
    h('button', { type: 'submit' }, 'Filter'),
    h(
      'label',
      {},
      h('input', {
        type: 'checkbox',
        id: 'live',
        ...(params.get('live') ? { checked: true } : {}),
      }),
      ' Live',
    ),
  );
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const next = new URLSearchParams();
    for (const [k, v] of new FormData(form).entries())
      if (typeof v === 'string' && v !== '') next.set(k, v);
    if ((form.querySelector('#live') as HTMLInputElement).checked) next.set('live', '1');
    location.hash = `#/flows?${next.toString()}`;
  });
  (form.querySelector('#live') as HTMLInputElement).addEventListener('change', () =>
    form.requestSubmit(),
  );
  const r = await api<{ records: Flow[] }>(`/api/v1/flows?${q.toString()}&limit=500`);
  const t = table(
    FLOW_HEAD,
    r.records.map(flowRow),
    `${r.records.length} flow record(s), newest first`,
  );
  t.id = 'flow-table';
  root.replaceChildren(h('h1', {}, 'Flow log'), form, t);
  root.dataset['ready'] = 'flows';
  if (params.get('live')) {
    let last = r.records[0]?.id ?? 0;
    const tbody = t.tBodies[0] as HTMLTableSectionElement;
    const timer = window.setInterval(() => {
      q.delete('since');
      void api<{ records: Flow[] }>(`/api/v1/flows?${q.toString()}&after=${last}&limit=500`).then(
        (n) => {
          for (const f of n.records) {
            last = Math.max(last, f.id);
            tbody.prepend(h('tr', { class: 'new' }, ...flowRow(f).map((c) => h('td', {}, c))));
          }
        },
      );
    }, 2000);
    live.stop = () => clearInterval(timer);
  }
}

interface AuditEntry {
  seq: number;
  time: string;
  principal?: { kind: string; name: string };
  remote: string;
  verb: string;
  kind?: string;
  namespace?: string;
  name?: string;
  outcome: 'allowed' | 'refused';
  status: number;
  message?: string;
  changes?: { kind: string; name: string; namespace?: string }[];
}

export async function auditView(root: HTMLElement, params: URLSearchParams): Promise<void> {
  const q = new URLSearchParams();
  for (const k of ['user', 'kind', 'namespace', 'outcome', 'since']) {
    const v = params.get(k);
    if (v) q.set(k, v);
  }
  const form = h(
    'form',
    { class: 'filters', role: 'search', 'aria-label': 'audit filters' },
    field('User', 'user', q.get('user') ?? ''),
    field('Kind', 'kind', q.get('kind') ?? ''),
    field('Namespace', 'namespace', q.get('namespace') ?? ''),
    field('Outcome', 'outcome', q.get('outcome') ?? '', ['', 'allowed', 'refused']),
    h('button', { type: 'submit' }, 'Filter'),
  );
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const next = new URLSearchParams();
    for (const [k, v] of new FormData(form).entries())
      if (typeof v === 'string' && v !== '') next.set(k, v);
    location.hash = `#/audit?${next.toString()}`;
  });
  q.set('limit', '500');
  const r = await api<{ entries: AuditEntry[] }>(`/api/v1/audit?${q.toString()}`);
  const rows = [...r.entries].reverse().map((e) => [
    String(e.seq),
    when(e.time),
    e.principal ? `${e.principal.kind} ${e.principal.name}` : '—',
    e.remote,
    e.verb,
    e.name !== undefined
      ? `${e.kind ?? ''} ${e.namespace ? `${e.namespace}/` : ''}${e.name}`
      : (e.changes ?? [])
          .slice(0, 3)
          .map(
            (c) =>
              `${c.kind.split('.')[0] ?? c.kind} ${c.namespace ? `${c.namespace}/` : ''}${c.name}`,
          )
          .join(', '),
    h(
      'span',
      { class: `verdict ${e.outcome === 'refused' ? 'deny' : 'allow'}` },
      e.outcome === 'refused' ? `refused ${e.status}` : 'ok',
    ),
    e.message ?? '',
  ]);
  const t = table(
    ['Seq', 'Time', 'Who', 'From', 'Verb', 'What', 'Outcome', 'Message'],
    rows,
    `${rows.length} audit entries, newest first`,
  );
  t.id = 'audit-table';
  root.replaceChildren(h('h1', {}, 'Audit log'), form, t);
  root.dataset['ready'] = 'audit';
}
