// The service graph: endpoints grouped by namespace and app, edges for the flows observed in the
// window, coloured by verdict (refused red and dashed, allowed green), their width by volume, and
// beneath them, in blue dots, the pairs the policy allows (the engine over the stored policies
// and endpoints). Every node and edge is focusable and clickable: a node opens its endpoint page,
// an observed edge the flows behind it with the rule that decided each, a policy edge the rule
// that allows it and the flows seen on that pair. Lists below the picture say the same in text
// (and are what a screen reader reads).

import type { Flow } from './api.js';
import { api, decidedBy, endpointName } from './api.js';
import { h, s, table, when } from './dom.js';

interface GNode {
  namespace: string | null;
  name: string | null;
  ip: string;
  labels: Record<string, string>;
}

interface GEdge {
  source: { namespace: string | null; name: string | null; ip: string };
  destination: { namespace: string | null; name: string | null; ip: string };
  verdict: 'allow' | 'deny';
  point: 'kernel' | 'l7';
  policy: string | null;
  provenanceKind: string;
  count: number;
  lastMs: number;
}

interface PEdge {
  source: { namespace: string; name: string };
  destination: { namespace: string; name: string };
  ports: string[];
  decision: {
    direction: 'ingress' | 'egress';
    kind: string;
    tier?: string;
    policy?: string;
    rule?: number;
    reason: string;
  };
}

interface PolicyGraph {
  edges: PEdge[];
  endpoints: (GNode & { namespace: string; name: string; openIngress: boolean })[];
  pairs: number;
  unrestricted: number;
  truncated: boolean;
}

const CELL = 34;

function key(e: { namespace: string | null; name: string | null; ip?: string }): string {
  return e.name === null ? `ip:${e.ip ?? ''}` : `${e.namespace ?? ''}/${e.name}`;
}

/** `namespace/name` of a policy edge's end. */
function pname(e: { namespace: string; name: string }): string {
  return `${e.namespace}/${e.name}`;
}

export async function graphView(root: HTMLElement, window: string): Promise<void> {
  const since = ['15m', '1h', '6h', '24h'].includes(window) ? window : '1h';
  const g = await api<{ nodes: GNode[]; edges: GEdge[]; allowed?: PolicyGraph }>(
    `/api/v1/flows/graph?since=${since}&allowed=1`,
  );
  const pg: PolicyGraph = g.allowed ?? {
    edges: [],
    endpoints: [],
    pairs: 0,
    unrestricted: 0,
    truncated: false,
  };
  // Endpoints of the policy model join the observed ones (an endpoint nobody talked to yet).
  const openIngress = new Set<string>();
  const seen = new Set(g.nodes.map(key));
  const nodes: GNode[] = [...g.nodes];
  for (const e of pg.endpoints) {
    if (e.openIngress) openIngress.add(key(e));
    if (!seen.has(key(e))) {
      seen.add(key(e));
      nodes.push({ namespace: e.namespace, name: e.name, ip: e.ip, labels: e.labels });
    }
  }
  const detail = h('section', { class: 'detail', 'aria-live': 'polite', id: 'edge-detail' });
  const picker = h(
    'label',
    {},
    'Window ',
    h(
      'select',
      {
        id: 'graph-window',
        onchange: (e: Event) =>
          (location.hash = `#/graph?since=${(e.target as HTMLSelectElement).value}`),
      },
      ...['15m', '1h', '6h', '24h'].map((w) => {
        const o = h('option', { value: w }, `last ${w}`);
        if (w === since) o.selected = true;
        return o;
      }),
    ),
  );
  // Groups: namespace (outside addresses last), then app label, then name.
  const groups = new Map<string, GNode[]>();
  for (const n of nodes) {
    const ns = n.namespace ?? (n.name === null ? '(outside)' : '(cluster)');
    const list = groups.get(ns) ?? [];
    list.push(n);
    groups.set(ns, list);
  }
  const order = [...groups.keys()].sort((a, b) =>
    a.startsWith('(') === b.startsWith('(') ? (a < b ? -1 : 1) : a.startsWith('(') ? 1 : -1,
  );
  const pos = new Map<string, { x: number; y: number }>();
  const boxes: { ns: string; x: number; y: number; w: number; hgt: number; title: string }[] = [];
  const maxW = 1200;
  let x = 10;
  let y = 30;
  let rowH = 0;
  for (const ns of order) {
    const list = (groups.get(ns) ?? []).sort((a, b) => {
      const aa = a.labels['app'] ?? '';
      const ba = b.labels['app'] ?? '';
      return aa !== ba ? (aa < ba ? -1 : 1) : key(a) < key(b) ? -1 : 1;
    });
    const cols = Math.max(1, Math.ceil(Math.sqrt(list.length)));
    const rows = Math.ceil(list.length / cols);
    const apps = [...new Set(list.map((n) => n.labels['app'] ?? ''))].filter(Boolean);
    const title = `${ns}${apps.length ? ` · ${apps.slice(0, 4).join(', ')}${apps.length > 4 ? '…' : ''}` : ''}`;
    // Wide enough for its title (about 7 px a character at 12 px).
    const w = Math.max(cols * CELL + 20, Math.min(360, title.length * 7 + 16));
    const hgt = rows * CELL + 36;
    if (x + w > maxW && x > 10) {
      x = 10;
      y += rowH + 20;
      rowH = 0;
    }
    list.forEach((n, i) =>
      pos.set(key(n), {
        x: x + 10 + (i % cols) * CELL + CELL / 2,
        y: y + 28 + Math.floor(i / cols) * CELL + CELL / 2,
      }),
    );
    boxes.push({ ns, x, y, w, hgt, title });
    x += w + 20;
    rowH = Math.max(rowH, hgt);
  }
  const width = Math.max(400, ...boxes.map((b) => b.x + b.w + 10));
  const height = y + rowH + 20;
  const svg = s('svg', {
    // A margin above and below: curves between boxes on one row bend outside the boxes.
    viewBox: `0 -60 ${width} ${height + 120}`,
    width,
    height: height + 120,
    role: 'group',
    'aria-label': `service graph: ${nodes.length} endpoints, ${g.edges.length} observed flow edges, ${pg.edges.length} edges policy allows`,
    id: 'graph',
  });
  for (const b of boxes) {
    svg.append(
      s('rect', { x: b.x, y: b.y, width: b.w, height: b.hgt, rx: 8, class: 'ns-box' }),
      s('text', { x: b.x + 8, y: b.y + 16, class: 'ns-label' }, b.title),
    );
  }
  const showEdge = (e: GEdge) => void edgeDetail(detail, e);
  const showPolicy = (e: PEdge) => void policyDetail(detail, e);
  // What policy allows: straight blue dotted lines under the observed curves, each with a square
  // handle a third of the way along.
  const policyHandles: SVGElement[] = [];
  for (const e of pg.edges) {
    const a = pos.get(key(e.source));
    const b = pos.get(key(e.destination));
    if (!a || !b) continue;
    const label = `${pname(e.source)} → ${pname(e.destination)}: policy allows ${e.ports.join(', ')} (${decidedBy(e.decision)})`;
    const line = s('line', {
      x1: a.x,
      y1: a.y,
      x2: b.x,
      y2: b.y,
      class: 'edge policy',
      'aria-hidden': 'true',
    });
    line.addEventListener('click', () => showPolicy(e));
    svg.append(line);
    const hx = a.x + (b.x - a.x) / 3;
    const hy = a.y + (b.y - a.y) / 3;
    const handle = s(
      'rect',
      {
        x: hx - 4,
        y: hy - 4,
        width: 8,
        height: 8,
        class: 'edge-handle policy',
        tabindex: 0,
        role: 'button',
        'aria-label': label,
      },
      s('title', {}, label),
    );
    handle.addEventListener('click', () => showPolicy(e));
    handle.addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter') showPolicy(e);
    });
    policyHandles.push(handle);
  }
  const sorted = [...g.edges].sort((a, b) =>
    a.verdict === b.verdict ? b.count - a.count : a.verdict === 'allow' ? -1 : 1,
  );
  const handles: SVGElement[] = [];
  for (const e of sorted) {
    const a = pos.get(key(e.source));
    const b = pos.get(key(e.destination));
    if (!a || !b) continue;
    // A curve bent to one side by verdict (refused and allowed between one pair stay apart); its
    // midpoint carries the handle a person clicks or focuses.
    const dx = b.x - a.x;
    const dy = b.y - a.y;
    const len = Math.max(1, Math.hypot(dx, dy));
    const bend = (e.verdict === 'deny' ? 1 : -1) * Math.max(18, len * 0.18);
    const mx = (a.x + b.x) / 2 + (-dy / len) * bend;
    const my = (a.y + b.y) / 2 + (dx / len) * bend;
    const label = `${endpointName(e.source)} → ${endpointName(e.destination)}: ${e.count} ${e.verdict === 'deny' ? 'refused' : 'allowed'} at ${e.point} (${e.policy ?? e.provenanceKind})`;
    const p = s('path', {
      d: `M${a.x},${a.y} Q${2 * mx - (a.x + b.x) / 2},${2 * my - (a.y + b.y) / 2} ${b.x},${b.y}`,
      class: `edge ${e.verdict}`,
      'stroke-width': Math.min(6, 1 + Math.log10(1 + e.count)),
      'aria-hidden': 'true',
    });
    p.addEventListener('click', () => showEdge(e));
    svg.append(p);
    const handle = s(
      'circle',
      {
        cx: mx,
        cy: my,
        r: 6,
        class: `edge-handle ${e.verdict}`,
        tabindex: 0,
        role: 'button',
        'aria-label': label,
      },
      s('title', {}, label),
    );
    handle.addEventListener('click', () => showEdge(e));
    handle.addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter') showEdge(e);
    });
    handles.push(handle);
  }
  for (const n of nodes) {
    const c = pos.get(key(n));
    if (!c) continue;
    const name = endpointName(n);
    const isOpen = openIngress.has(key(n));
    const gEl = s('g', {
      class: isOpen ? 'node open' : 'node',
      tabindex: 0,
      role: 'link',
      'aria-label': `endpoint ${name}${n.labels['app'] ? ` (app ${n.labels['app']})` : ''}${isOpen ? ', no ingress policy: any source may connect' : ''}`,
    });
    gEl.append(
      s('circle', { cx: c.x, cy: c.y, r: 9 }),
      s('title', {}, `${name}${n.name ? ` ${n.ip}` : ''}`),
    );
    if (nodes.length <= 200)
      gEl.append(s('text', { x: c.x, y: c.y + 20, class: 'node-label' }, n.name ?? n.ip));
    const open = () => {
      if (n.name) location.hash = `#/endpoint/${n.namespace ?? ''}/${n.name}`;
    };
    gEl.addEventListener('click', open);
    gEl.addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter') open();
    });
    svg.append(gEl);
  }
  // Handles above the nodes, so every edge can be reached.
  svg.append(...policyHandles, ...handles);
  const swatch = (cls: string) => {
    const el = s('svg', { width: 28, height: 10, class: 'swatch-svg', 'aria-hidden': 'true' });
    el.append(
      cls === 'open'
        ? s('circle', { cx: 14, cy: 5, r: 4, class: 'legend-node open' })
        : s('line', { x1: 1, y1: 5, x2: 27, y2: 5, class: `edge ${cls}` }),
    );
    return el;
  };
  const legend = h(
    'ul',
    { class: 'legend', 'aria-label': 'legend', id: 'graph-legend' },
    h('li', {}, swatch('allow'), ' observed flows, allowed'),
    h('li', {}, swatch('deny'), ' observed flows, refused'),
    h('li', {}, swatch('policy'), ' allowed by policy (not necessarily seen)'),
    h('li', {}, swatch('open'), ' no ingress policy: any source may connect'),
    h(
      'li',
      { class: 'muted' },
      `Click an edge for its flows and the rule that decided. ${pg.unrestricted} pair(s) no policy restricts are not drawn${pg.truncated ? `; policy edges truncated (${pg.edges.length} of ${pg.pairs} shown)` : ''}.`,
    ),
  );
  const top = [...g.edges].sort((a, b) => b.count - a.count).slice(0, 50);
  const list = table(
    ['From', 'To', 'Verdict', 'Point', 'Decided by', 'Count', ''],
    top.map((e) => [
      endpointName(e.source),
      endpointName(e.destination),
      h('span', { class: `verdict ${e.verdict}` }, e.verdict === 'deny' ? 'refused' : 'allowed'),
      e.point,
      e.policy ?? e.provenanceKind,
      String(e.count),
      h('button', { type: 'button', onclick: () => showEdge(e) }, 'flows'),
    ]),
    `Busiest edges (${top.length} of ${g.edges.length})`,
  );
  const plist = table(
    ['From', 'To', 'Ports', 'Decided by', ''],
    pg.edges
      .slice(0, 50)
      .map((e) => [
        pname(e.source),
        pname(e.destination),
        e.ports.join(', '),
        ruleLink({ provenance: e.decision }),
        h('button', { type: 'button', onclick: () => showPolicy(e) }, 'details'),
      ]),
    `Allowed by policy (${Math.min(50, pg.edges.length)} of ${pg.pairs} pair(s))`,
  );
  plist.id = 'policy-edges';
  root.replaceChildren(
    h('h1', {}, 'Service graph'),
    h(
      'div',
      { class: 'toolbar' },
      picker,
      h(
        'span',
        { class: 'muted', id: 'graph-counts' },
        ` ${nodes.length} endpoints · ${g.edges.length} observed edges · ${pg.edges.length} allowed by policy`,
      ),
    ),
    legend,
    h('div', { class: 'graph-wrap' }, svg),
    detail,
    list,
    plist,
  );
  root.dataset['ready'] = 'graph';
}

async function edgeDetail(detail: HTMLElement, e: GEdge): Promise<void> {
  detail.replaceChildren(h('p', {}, 'Loading…'));
  const dst = e.destination.name
    ? `endpoint=${encodeURIComponent(`${e.destination.namespace ?? ''}/${e.destination.name}`)}`
    : '';
  const r = await api<{ records: Flow[] }>(
    `/api/v1/flows?${dst}&verdict=${e.verdict}&point=${e.point}&limit=500`,
  );
  const mine = r.records.filter(
    (f) =>
      endpointName(f.source) === endpointName(e.source) &&
      endpointName(f.destination) === endpointName(e.destination),
  );
  detail.replaceChildren(
    h('h2', {}, `${endpointName(e.source)} → ${endpointName(e.destination)}`),
    table(
      ['Time', 'Port', 'L7', 'Verdict', 'Point', 'Direction', 'Decided by', 'Staged', 'Count'],
      mine
        .slice(0, 50)
        .map((f) => [
          when(f.end),
          `${f.protocol}/${f.destination.port ?? ''}`,
          f.method ? `${f.method} ${f.path ?? ''}` : '',
          h(
            'span',
            { class: `verdict ${f.verdict}` },
            f.verdict === 'deny' ? 'refused' : 'allowed',
          ),
          f.point,
          f.direction ?? '',
          ruleLink(f),
          stagedCell(f),
          String(f.count),
        ]),
      `${mine.length} flow record(s)`,
    ),
    ...(e.destination.name
      ? [
          h(
            'p',
            {},
            h(
              'a',
              {
                href: `#/flows?endpoint=${encodeURIComponent(`${e.destination.namespace ?? ''}/${e.destination.name}`)}&verdict=${e.verdict}`,
              },
              `Flow log of ${endpointName(e.destination)}`,
            ),
          ),
        ]
      : []),
  );
}

/** A policy edge: the rule that allows it, and the flows observed on that pair. */
async function policyDetail(detail: HTMLElement, e: PEdge): Promise<void> {
  detail.replaceChildren(h('p', {}, 'Loading…'));
  const dst = `${e.destination.namespace}/${e.destination.name}`;
  const r = await api<{ records: Flow[] }>(
    `/api/v1/flows?endpoint=${encodeURIComponent(dst)}&limit=500`,
  );
  const mine = r.records.filter(
    (f) => endpointName(f.source) === pname(e.source) && endpointName(f.destination) === dst,
  );
  detail.replaceChildren(
    h('h2', {}, `${pname(e.source)} → ${dst}: allowed by policy`),
    h(
      'p',
      { id: 'policy-decision' },
      `Policy allows ${e.ports.join(', ')}; decided at the ${e.decision.direction === 'ingress' ? "destination's ingress" : "source's egress"} by `,
      ruleLink({ provenance: e.decision }),
      e.decision.reason ? ` — ${e.decision.reason}` : '',
    ),
    mine.length === 0
      ? h('p', { class: 'muted' }, 'No flows observed on this pair.')
      : table(
          ['Time', 'Port', 'L7', 'Verdict', 'Point', 'Decided by', 'Staged', 'Count'],
          mine
            .slice(0, 50)
            .map((f) => [
              when(f.end),
              `${f.protocol}/${f.destination.port ?? ''}`,
              f.method ? `${f.method} ${f.path ?? ''}` : '',
              h(
                'span',
                { class: `verdict ${f.verdict}` },
                f.verdict === 'deny' ? 'refused' : 'allowed',
              ),
              f.point,
              ruleLink(f),
              stagedCell(f),
              String(f.count),
            ]),
          `${mine.length} observed flow record(s) on this pair`,
        ),
    h(
      'p',
      {},
      h('a', { href: `#/flows?endpoint=${encodeURIComponent(dst)}` }, `Flow log of ${dst}`),
    ),
  );
}

/**
 * What the staged policies would have done with a flow (never enforced): `db/lockdown would
 * deny (rule 0)`, one line per staged policy, each linked to the policy board.
 */
export function stagedCell(f: Pick<Flow, 'staged'>): Node {
  const list = f.staged ?? [];
  if (list.length === 0) return document.createTextNode('');
  const what = (v: string) =>
    v === 'allow' || v === 'deny' ? `would ${v}` : v === 'pass' ? 'would pass' : 'no rule matches';
  return h(
    'span',
    { class: 'staged-verdicts' },
    ...list.map((s) =>
      h(
        'span',
        {
          class: `staged-verdict ${s.verdict}`,
          title: 'staged: evaluated and reported, never enforced',
        },
        h('a', { href: `#/policies?focus=${encodeURIComponent(s.policy)}` }, s.policy),
        ` ${what(s.verdict)}${s.rule !== undefined ? ` (rule ${s.rule})` : ''}`,
      ),
    ),
  );
}

export function ruleLink(f: Pick<Flow, 'provenance'>): Node {
  const text = decidedBy(f.provenance);
  if (!f.provenance.policy) return document.createTextNode(text);
  return h('a', { href: `#/policies?focus=${encodeURIComponent(f.provenance.policy)}` }, text);
}
