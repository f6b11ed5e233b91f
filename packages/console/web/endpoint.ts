// The endpoint page: labels, namespace, identity, the policies consulted for it in evaluation
// order (from the core engine compiled in the browser over the API's resources), the decisions
// recorded per rule for it, and its last L7 decisions.

import { compile, formatIp, matchSelector, parseSelector } from '@palisade/core';
import type { Resource } from '@palisade/core';
import type { Flow } from './api.js';
import { api, decidedBy, endpointName } from './api.js';
import { h, table, when } from './dom.js';
import { ruleLink } from './graph.js';
import { byOrder, loadModel, policyRows, tierRows } from './resources.js';

export async function endpointView(root: HTMLElement, ref: string): Promise<void> {
  const [model, flows, l7] = await Promise.all([
    loadModel(),
    api<{ records: Flow[] }>(
      `/api/v1/flows?endpoint=${encodeURIComponent(ref)}&since=24h&limit=2000`,
    ),
    api<{ records: Flow[] }>(`/api/v1/flows?endpoint=${encodeURIComponent(ref)}&point=l7&limit=20`),
  ]);
  const engine = compile(model);
  const ep = engine.describeEndpoint(ref);
  const [ns = '', name = ''] = ref.split('/');
  const res = model.find(
    (r) =>
      (r.kind === 'Pod' || r.kind === 'WorkloadEndpoint') &&
      r.metadata.namespace === ns &&
      r.metadata.name === name,
  ) as
    | {
        kind: string;
        metadata: { labels?: Record<string, string> };
        spec?: { serviceAccountName?: string; node?: string };
      }
    | undefined;
  const sa = res?.spec?.serviceAccountName ?? 'default';
  const labels = ep ? Object.entries(ep.ownLabels) : Object.entries(res?.metadata.labels ?? {});
  // The policies that select this endpoint, per direction, in evaluation order (tiers by order,
  // then policies by order), evaluated with the core's selector code over Calico's label set.
  const active = ep ? activePolicies(model, ep.labels, ns) : [];
  const traceList = (dir: 'Ingress' | 'Egress') => {
    const list = active.filter((p) => p.types.includes(dir));
    return list.length === 0
      ? h('p', { class: 'muted' }, 'no policy selects this endpoint')
      : h(
          'ol',
          { class: 'trace' },
          ...list.map((p) =>
            h(
              'li',
              {},
              `tier ${p.tier}: ${p.qualified}`,
              p.staged ? h('span', { class: 'badge staged' }, 'STAGED') : null,
            ),
          ),
        );
  };
  const perRule = new Map<string, { text: string; allow: number; deny: number; point: string }>();
  for (const f of flows.records) {
    const k = `${f.point}|${f.direction ?? ''}|${decidedBy(f.provenance)}`;
    const v = perRule.get(k) ?? {
      text: `${decidedBy(f.provenance)}`,
      allow: 0,
      deny: 0,
      point: `${f.point} ${f.direction ?? ''}`,
    };
    if (f.verdict === 'allow') v.allow += f.count;
    else v.deny += f.count;
    perRule.set(k, v);
  }
  root.replaceChildren(
    h('h1', {}, `Endpoint ${ref}`),
    ...(!ep && !res
      ? [
          h(
            'p',
            { class: 'error', role: 'alert' },
            'This endpoint is not in the API (it may have been removed); its flow records follow.',
          ),
        ]
      : []),
    h(
      'dl',
      { class: 'facts' },
      h('dt', {}, 'Namespace'),
      h('dd', {}, ns),
      h('dt', {}, 'Identity'),
      h('dd', {}, `spiffe://cluster.local/ns/${ns}/sa/${sa}`),
      h('dt', {}, 'Addresses'),
      h('dd', {}, ep ? ep.ips.map((i) => formatIp(i)).join(', ') || '—' : '—'),
      h('dt', {}, 'Node'),
      h('dd', {}, ep?.node ?? res?.spec?.node ?? '—'),
      h('dt', {}, 'Labels'),
      h(
        'dd',
        {},
        labels.length
          ? h(
              'ul',
              { class: 'labels' },
              ...labels.map(([k, v]) => h('li', {}, h('code', {}, `${k}=${v}`))),
            )
          : 'none',
      ),
    ),
    h('h2', {}, 'Active policies in evaluation order'),
    h(
      'div',
      { class: 'two' },
      h('section', {}, h('h3', {}, 'Ingress'), traceList('Ingress')),
      h('section', {}, h('h3', {}, 'Egress'), traceList('Egress')),
    ),
    h('h2', {}, 'Decisions per rule (flow records, last 24 h)'),
    table(
      ['Point', 'Rule', 'Allowed', 'Refused'],
      [...perRule.values()]
        .sort((a, b) => b.allow + b.deny - (a.allow + a.deny))
        .map((v) => [v.point, v.text, String(v.allow), String(v.deny)]),
    ),
    h('h2', {}, 'Last L7 decisions'),
    l7.records.length === 0
      ? h('p', { class: 'muted' }, 'none recorded')
      : table(
          ['Time', 'From', 'Request', 'Verdict', 'Decided by'],
          l7.records.map((f) => [
            when(f.end),
            endpointName(f.source),
            `${f.method ?? ''} ${f.path ?? ''}`,
            h(
              'span',
              { class: `verdict ${f.verdict}` },
              f.verdict === 'deny' ? 'refused' : 'allowed',
            ),
            ruleLink(f),
          ]),
        ),
  );
  root.dataset['ready'] = 'endpoint';
}

function activePolicies(
  model: readonly Resource[],
  labels: Readonly<Record<string, string>>,
  ns: string,
): { tier: string; qualified: string; staged: boolean; types: string[] }[] {
  const rows = policyRows(model);
  const tiers = tierRows(model, rows).map((t) => t.name);
  const out = [];
  for (const t of tiers)
    for (const p of rows.filter((r) => r.tier === t).sort(byOrder)) {
      if (p.namespace !== undefined && p.namespace !== ns) continue;
      const sel = p.selector === 'podSelector' ? undefined : parseSelector(p.selector);
      const k8s = p.selector === 'podSelector' ? k8sSelects(model, p, labels) : false;
      if (sel ? sel.ok && matchSelector(sel.selector, labels) : k8s)
        out.push({
          tier: t,
          qualified: p.qualified,
          staged: p.staged,
          types: p.types ? p.types.split(', ') : ['Ingress'],
        });
    }
  return out;
}

/** A Kubernetes podSelector's matchLabels (expressions are not shown here: the engine judges). */
function k8sSelects(
  model: readonly Resource[],
  p: { name: string; namespace?: string },
  labels: Readonly<Record<string, string>>,
): boolean {
  const r = model.find(
    (x) =>
      x.apiVersion.startsWith('networking.k8s.io') &&
      x.metadata.name === p.name &&
      x.metadata.namespace === p.namespace,
  ) as { spec?: { podSelector?: { matchLabels?: Record<string, string> } } } | undefined;
  const m = r?.spec?.podSelector?.matchLabels ?? {};
  return Object.entries(m).every(([k, v]) => labels[k] === v);
}
