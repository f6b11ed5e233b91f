// The policy board: tiers in evaluation order, their policies in order with the hits the flow
// records attribute to each (allowed / refused, last hour), staged policies marked, and the
// tier-default refusals of each tier.

import { api } from './api.js';
import { h, table } from './dom.js';
import { byOrder, loadModel, policyRows, tierRows } from './resources.js';

interface Hit {
  policy: string | null;
  tier: string | null;
  provenanceKind: string;
  point: string;
  verdict: 'allow' | 'deny';
  count: number;
}

export async function boardView(root: HTMLElement, focus: string | undefined): Promise<void> {
  const [model, hits] = await Promise.all([
    loadModel(),
    api<{ hits: Hit[] }>('/api/v1/flows/policies?since=1h'),
  ]);
  const policies = policyRows(model);
  const tiers = tierRows(model, policies);
  const count = (pred: (x: Hit) => boolean) =>
    hits.hits.filter(pred).reduce((a, x) => a + x.count, 0);
  const sections = tiers.map((t, ti) => {
    const mine = policies.filter((p) => p.tier === t.name).sort(byOrder);
    const tierDeny = count(
      (x) => x.provenanceKind === 'tier-default' && x.tier === t.name && x.verdict === 'deny',
    );
    return h(
      'section',
      { class: 'tier', 'aria-labelledby': `tier-${ti}` },
      h(
        'h2',
        { id: `tier-${ti}` },
        `${ti + 1}. Tier ${t.name}`,
        h('span', { class: 'muted' }, ` order ${t.order ?? 'none'} · default ${t.defaultAction}`),
      ),
      mine.length === 0
        ? h('p', { class: 'muted' }, 'no policies')
        : table(
            ['#', 'Policy', 'Kind', 'Order', 'Selector', 'Allowed (1h)', 'Refused (1h)'],
            mine.map((p, i) => {
              const allow = count((x) => x.policy === p.qualified && x.verdict === 'allow');
              const deny = count((x) => x.policy === p.qualified && x.verdict === 'deny');
              const name = h(
                'span',
                { class: p.qualified === focus ? 'focus' : '' },
                p.qualified,
                p.staged
                  ? h(
                      'span',
                      {
                        class: 'badge staged',
                        title: 'staged: evaluated and reported, never enforced',
                      },
                      'STAGED',
                    )
                  : null,
              );
              return [
                String(i + 1),
                name,
                p.kind,
                p.order === undefined ? '—' : String(p.order),
                h('code', {}, p.selector),
                String(allow),
                String(deny),
              ];
            }),
          ),
      h('p', { class: 'tier-default' }, `Default deny of tier ${t.name}: ${tierDeny} refused (1h)`),
    );
  });
  const unselected = count((x) => x.provenanceKind === 'no-policy');
  root.replaceChildren(
    h('h1', {}, 'Policy board'),
    h(
      'p',
      { class: 'muted' },
      'Tiers and policies in evaluation order (order ascending, none last, then name). Hits are from the flow records of the last hour.',
    ),
    ...sections,
    h('p', {}, `No policy selects the endpoint: ${unselected} flow(s) (1h)`),
  );
  if (focus) root.querySelector('.focus')?.scrollIntoView({ block: 'center' });
  root.dataset['ready'] = 'board';
}
