// Loading: YAML or JSON text (multi-document, Kubernetes `List`) → typed resources and every
// problem of the text as diagnostics with file, line and column (DESIGN §3, STYLE 6).
// Owns: parsing, limits and positions. Must never: throw on user input or do I/O.

import { LineCounter, isMap, isScalar, isSeq, parseAllDocuments } from 'yaml';
import type { Document, Node as YamlNode } from 'yaml';
import type { Diagnostic } from '../diagnostics/diagnostic.js';
import { sortDiagnostics } from '../diagnostics/diagnostic.js';
import { suggest } from '../diagnostics/suggest.js';
import type { Resource, SourceRef } from '../model/resources.js';
import type { LoadErrorCode } from './codes.js';
import { ACCESS_KINDS } from './access-kinds.js';
import { KINDS, UNSUPPORTED_KINDS, checkSubdomain, metadataSchema } from './kinds.js';
import type { Path, Problem, Schema } from './schema.js';
import { validate } from './schema.js';

export interface LoadOptions {
  /** Largest text accepted, in bytes (default 16 MiB). */
  readonly maxBytes?: number;
  /** Most documents (after List expansion) per text (default 10,000). */
  readonly maxDocuments?: number;
  /** Deepest nesting of mappings and lists (default 64). */
  readonly maxDepth?: number;
  /** Most alias expansions per document (default 100). */
  readonly maxAliases?: number;
  /** Also accept the access-control kinds of `palisade.dev/v1` (the API server only). */
  readonly accessKinds?: boolean;
}

export const DEFAULT_LOAD_LIMITS = {
  maxBytes: 16 * 1024 * 1024,
  maxDocuments: 10_000,
  maxDepth: 64,
  maxAliases: 100,
} as const;

export interface LoadResult {
  readonly resources: Resource[];
  readonly diagnostics: Diagnostic[];
}

const ALL_KIND_NAMES = [...KINDS.keys()].map((k) => k.slice(k.lastIndexOf('/') + 1));

/** UTF-8 size of `s`, computed only as far as needed to compare it with `limit`. */
function utf8Length(s: string, limit: number): number {
  if (s.length > limit || s.length * 3 <= limit) return s.length;
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    n += c < 0x80 ? 1 : c < 0x800 ? 2 : c >= 0xd800 && c <= 0xdbff ? 2 : 3;
  }
  return n;
}

/** Nesting depth of the raw text, by a cheap scan of indentation and brackets. */
function measureDepth(node: YamlNode | null | undefined, limit: number): boolean {
  const stack: [YamlNode, number][] = [];
  if (node) stack.push([node, 1]);
  while (stack.length > 0) {
    const [n, d] = stack.pop() as [YamlNode, number];
    if (d > limit) return false;
    if (isMap(n)) {
      for (const p of n.items)
        if (p.value && typeof p.value === 'object') stack.push([p.value as YamlNode, d + 1]);
    } else if (isSeq(n)) {
      for (const it of n.items)
        if (it && typeof it === 'object') stack.push([it as YamlNode, d + 1]);
    }
  }
  return true;
}

interface DocCtx {
  readonly doc: Document.Parsed;
  readonly file: string;
  readonly lc: LineCounter;
  /** Prefix of the path inside the document (List items). */
  readonly base: Path;
  readonly index: number;
  readonly accessKinds: boolean;
}

function position(
  ctx: DocCtx,
  path: Path,
  atKey: boolean,
  offset?: number,
): { line: number; column: number } {
  const full = [...ctx.base, ...path];
  let node: unknown = ctx.doc.contents;
  let keyNode: unknown;
  for (const seg of full) {
    if (isMap(node)) {
      const pair = node.items.find((p) => (isScalar(p.key) ? p.key.value : p.key) === seg);
      if (!pair) break;
      keyNode = pair.key;
      node = pair.value;
    } else if (isSeq(node) && typeof seg === 'number') {
      keyNode = undefined;
      node = node.items[seg];
    } else break;
  }
  const target = (atKey && keyNode ? keyNode : (node ?? keyNode)) as
    { range?: [number, number, number] } | undefined;
  let off = target?.range?.[0] ?? ctx.doc.range[0];
  if (offset !== undefined && isScalar(target)) {
    const src = (target as { source?: string; type?: string }).type;
    off += offset + (src === 'QUOTE_DOUBLE' || src === 'QUOTE_SINGLE' ? 1 : 0);
  }
  const p = ctx.lc.linePos(off);
  return { line: p.line, column: p.col };
}

function diag(
  ctx: DocCtx,
  code: LoadErrorCode,
  path: Path,
  message: string,
  hint?: string,
  atKey = false,
  offset?: number,
): Diagnostic {
  const { line, column } = position(ctx, path, atKey, offset);
  return {
    code,
    severity: 'error',
    message,
    file: ctx.file,
    line,
    column,
    ...(hint !== undefined ? { hint } : {}),
    ...(path.length > 0
      ? {
          path: path
            .map((p) => (typeof p === 'number' ? `[${p}]` : p))
            .join('.')
            .replace(/\.\[/g, '['),
        }
      : {}),
  };
}

function loadObject(value: unknown, ctx: DocCtx, out: Resource[], diags: Diagnostic[]): void {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    diags.push(
      diag(
        ctx,
        'POLICY_ERR_NOT_AN_OBJECT',
        [],
        'a document must be a mapping with apiVersion, kind and metadata',
      ),
    );
    return;
  }
  const obj = value as Record<string, unknown>;
  const apiVersion = obj.apiVersion;
  const kind = obj.kind;
  if (typeof apiVersion !== 'string' || typeof kind !== 'string') {
    diags.push(
      diag(
        ctx,
        'POLICY_ERR_MISSING_FIELD',
        [],
        'a document needs string fields apiVersion and kind',
        'e.g. apiVersion: projectcalico.org/v3, kind: NetworkPolicy',
      ),
    );
    return;
  }
  if (kind === 'List' || (kind.endsWith('List') && Array.isArray(obj.items))) {
    if (!Array.isArray(obj.items)) {
      diags.push(diag(ctx, 'POLICY_ERR_MISSING_FIELD', [], `a ${kind} needs an items list`));
      return;
    }
    obj.items.forEach((item, i) =>
      loadObject(item, { ...ctx, base: [...ctx.base, 'items', i] }, out, diags),
    );
    return;
  }
  const id = `${apiVersion}/${kind}`;
  const unsupported = UNSUPPORTED_KINDS.get(id);
  if (unsupported) {
    diags.push(
      diag(
        ctx,
        'POLICY_ERR_UNSUPPORTED',
        ['kind'],
        `${kind} (${apiVersion}) is not supported yet: ${unsupported}`,
      ),
    );
    return;
  }
  const spec = KINDS.get(id) ?? (ctx.accessKinds ? ACCESS_KINDS.get(id) : undefined);
  if (!spec) {
    const sameKind = [...KINDS.keys()].filter((k) => k.endsWith(`/${kind}`));
    if (sameKind.length > 0) {
      diags.push(
        diag(
          ctx,
          'POLICY_ERR_UNKNOWN_KIND',
          ['apiVersion'],
          `${kind} is not accepted with apiVersion ${JSON.stringify(apiVersion)}`,
          `use apiVersion ${sameKind.map((k) => k.slice(0, k.lastIndexOf('/'))).join(' or ')}`,
        ),
      );
    } else {
      const near = suggest(kind, ALL_KIND_NAMES);
      diags.push(
        diag(
          ctx,
          'POLICY_ERR_UNKNOWN_KIND',
          ['kind'],
          `unknown kind ${JSON.stringify(kind)} (${apiVersion})`,
          near
            ? `did you mean ${JSON.stringify(near)}?`
            : `accepted kinds: ${[...new Set(ALL_KIND_NAMES)].join(', ')}`,
        ),
      );
    }
    return;
  }
  const report = (p: Problem) =>
    diags.push(diag(ctx, p.code, p.path, p.message, p.hint, p.atKey ?? false, p.offset));
  const top: Record<string, Schema> = {
    apiVersion: { t: 'string' },
    kind: { t: 'string' },
    metadata: metadataSchema(spec.tolerant ?? false),
    ...(spec.spec ? { spec: spec.spec } : {}),
    ...(spec.extra ?? {}),
  };
  const before = diags.length;
  validate(
    {
      t: 'obj',
      fields: top,
      tolerant: spec.tolerant ?? false,
      required: ['metadata', ...(spec.specRequired ? ['spec'] : [])],
    },
    obj,
    [],
    report,
  );
  const meta = obj.metadata as Record<string, unknown> | undefined;
  if (meta && typeof meta.name === 'string') {
    const m = checkSubdomain(meta.name);
    if (m && kind !== 'WorkloadEndpoint')
      report({
        code: 'POLICY_ERR_INVALID_VALUE',
        path: ['metadata', 'name'],
        message: `metadata.name: ${m}`,
      });
  }
  spec.check?.(obj, report);
  if (meta && !spec.namespaced && !spec.dropsNamespace && meta.namespace !== undefined) {
    report({
      code: 'POLICY_ERR_INVALID_VALUE',
      path: ['metadata', 'namespace'],
      atKey: true,
      message: `${kind} is not namespaced; remove metadata.namespace`,
      ...(kind === 'GlobalNetworkPolicy'
        ? { hint: 'or use kind NetworkPolicy for a namespaced policy' }
        : {}),
    });
  }
  if (diags.length > before) return;
  const m = obj.metadata as { namespace?: string };
  const clusterScoped: Record<string, unknown> = { ...m };
  delete clusterScoped.namespace;
  const normalized = {
    ...obj,
    metadata: spec.namespaced
      ? { ...m, namespace: m.namespace ?? 'default' }
      : spec.dropsNamespace
        ? clusterScoped
        : m,
    ...(spec.spec && obj.spec === undefined ? { spec: {} } : {}),
  };
  const pos = position(ctx, [], false);
  const source: SourceRef = { file: ctx.file, line: pos.line, column: pos.column, doc: ctx.index };
  out.push({ ...normalized, source } as unknown as Resource);
}

/** Loads one text. Pure: `file` names the text in diagnostics only. */
export function loadText(text: string, file: string, options: LoadOptions = {}): LoadResult {
  const limits = { ...DEFAULT_LOAD_LIMITS, ...options };
  const diagnostics: Diagnostic[] = [];
  const resources: Resource[] = [];
  const size = utf8Length(text, limits.maxBytes);
  if (size > limits.maxBytes) {
    diagnostics.push({
      code: 'POLICY_ERR_LIMIT_EXCEEDED',
      severity: 'error',
      message: `the input is ${size} bytes; the limit is ${limits.maxBytes}`,
      hint: 'split it into several files',
      file,
      line: 0,
      column: 0,
    });
    return { resources, diagnostics };
  }
  const lc = new LineCounter();
  let docs: Document.Parsed[];
  try {
    docs = parseAllDocuments(text, {
      lineCounter: lc,
      uniqueKeys: true,
      prettyErrors: false,
    }) as Document.Parsed[];
  } catch (e) {
    diagnostics.push({
      code: 'POLICY_ERR_YAML_SYNTAX',
      severity: 'error',
      message: `cannot parse: ${(e as Error).message}`,
      file,
      line: 1,
      column: 1,
    });
    return { resources, diagnostics };
  }
  if (!Array.isArray(docs)) docs = [];
  let count = 0;
  docs.forEach((doc, index) => {
    const ctx: DocCtx = {
      doc,
      file,
      lc,
      base: [],
      index,
      accessKinds: options.accessKinds ?? false,
    };
    if (doc.errors.length > 0) {
      for (const e of doc.errors) {
        const p = lc.linePos(e.pos[0]);
        diagnostics.push({
          code: 'POLICY_ERR_YAML_SYNTAX',
          severity: 'error',
          message: e.message.split('\n')[0] ?? e.message,
          file,
          line: p.line,
          column: p.col,
        });
      }
      return;
    }
    if (doc.contents === null) return; // an empty document
    if (!measureDepth(doc.contents, limits.maxDepth)) {
      diagnostics.push(
        diag(
          ctx,
          'POLICY_ERR_LIMIT_EXCEEDED',
          [],
          `the document nests deeper than ${limits.maxDepth} levels`,
        ),
      );
      return;
    }
    let value: unknown;
    try {
      value = doc.toJS({ maxAliasCount: limits.maxAliases });
    } catch (e) {
      diagnostics.push(
        diag(
          ctx,
          'POLICY_ERR_LIMIT_EXCEEDED',
          [],
          `YAML aliases expand too much: ${(e as Error).message}`,
          'aliases are limited to protect against alias bombs; write the values out',
        ),
      );
      return;
    }
    const items =
      value && typeof value === 'object' && Array.isArray((value as { items?: unknown }).items)
        ? (value as { items: unknown[] }).items.length
        : 1;
    count += items;
    if (count > limits.maxDocuments) {
      if (count - items <= limits.maxDocuments)
        diagnostics.push(
          diag(
            ctx,
            'POLICY_ERR_LIMIT_EXCEEDED',
            [],
            `more than ${limits.maxDocuments} documents in one input`,
            'split it into several files',
          ),
        );
      return;
    }
    loadObject(value, ctx, resources, diagnostics);
  });
  checkDuplicates(resources, diagnostics);
  return { resources, diagnostics: sortDiagnostics(diagnostics) };
}

function resourceId(r: Resource): string {
  const group = r.apiVersion.includes('/') ? r.apiVersion.slice(0, r.apiVersion.indexOf('/')) : '';
  // Kubernetes and Calico NetworkPolicy are different kinds of the same name.
  const kind =
    r.kind === 'NetworkPolicy'
      ? `${group === 'projectcalico.org' ? 'calico' : 'k8s'}:NetworkPolicy`
      : r.kind;
  return `${kind}/${r.metadata.namespace ?? ''}/${r.metadata.name}`;
}

function checkDuplicates(resources: Resource[], diagnostics: Diagnostic[]): void {
  const seen = new Map<string, Resource>();
  for (const r of resources) {
    const id = resourceId(r);
    const first = seen.get(id);
    if (!first) {
      seen.set(id, r);
      continue;
    }
    diagnostics.push({
      code: 'POLICY_ERR_DUPLICATE',
      severity: 'error',
      message: `${r.kind} ${r.metadata.namespace ? `${r.metadata.namespace}/` : ''}${r.metadata.name} is defined twice`,
      hint: `first defined at ${first.source?.file ?? '?'}:${first.source?.line ?? 0}`,
      file: r.source?.file ?? '',
      line: r.source?.line ?? 0,
      column: r.source?.column ?? 0,
    });
  }
}

/** Loads several texts as one set: duplicates across them are errors too. */
export function loadMany(
  files: readonly { name: string; text: string }[],
  options: LoadOptions = {},
): LoadResult {
  const resources: Resource[] = [];
  const diagnostics: Diagnostic[] = [];
  for (const f of files) {
    const r = loadText(f.text, f.name, options);
    resources.push(...r.resources);
    diagnostics.push(...r.diagnostics.filter((d) => d.code !== 'POLICY_ERR_DUPLICATE'));
  }
  checkDuplicates(resources, diagnostics);
  return { resources, diagnostics: sortDiagnostics(diagnostics) };
}
