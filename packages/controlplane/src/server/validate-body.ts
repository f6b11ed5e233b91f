// Bodies → validated objects, with the same diagnostics as `palisade validate` (the core loader)
// plus the server's own checks: names safe for store keys, reserved role names, served kinds.
// Owns: that boundary. Must never: let an object through without a diagnostic-free load.

import { compile, loadText } from '@palisade/core';
import type { Diagnostic, Resource } from '@palisade/core';
import { BUILTIN_ROLE_NAMES } from '../auth/rbac.js';
import type { ServerKind } from '../resources/kinds.js';
import { kindOf } from '../resources/kinds.js';
import type { ApiObject } from '../resources/keys.js';
import { checkNamespaceName, checkResourceName } from '../resources/names.js';

export interface ValidObject {
  readonly kind: ServerKind;
  readonly object: ApiObject;
  /** Where it came from, for diagnostics. */
  readonly line: number;
  readonly column: number;
}

export interface Validated {
  readonly objects: ValidObject[];
  readonly diagnostics: Diagnostic[];
}

export function validateBody(text: string, file: string, maxDocuments: number): Validated {
  const r = loadText(text, file, { accessKinds: true, maxDocuments });
  const diagnostics: Diagnostic[] = [...r.diagnostics];
  const objects: ValidObject[] = [];
  const at = (res: Resource, code: string, message: string, hint?: string): Diagnostic => ({
    code,
    severity: 'error',
    message,
    file,
    line: res.source?.line ?? 0,
    column: res.source?.column ?? 0,
    ...(hint !== undefined ? { hint } : {}),
  });
  for (const res of r.resources) {
    const k = kindOf(res.apiVersion, res.kind);
    if (!k) {
      diagnostics.push(
        at(
          res,
          'API_ERR_UNKNOWN_KIND',
          `the server does not serve ${res.kind} (${res.apiVersion})`,
        ),
      );
      continue;
    }
    const nameProblem = checkResourceName(res.metadata.name);
    if (nameProblem) {
      diagnostics.push(at(res, 'API_ERR_INVALID_NAME', `metadata.name: ${nameProblem}`));
      continue;
    }
    const ns = res.metadata.namespace;
    const nsProblem = k.namespaced && ns !== undefined ? checkNamespaceName(ns) : undefined;
    if (nsProblem) {
      diagnostics.push(at(res, 'API_ERR_INVALID_NAME', `metadata.namespace: ${nsProblem}`));
      continue;
    }
    if (k.kind === 'Role' && BUILTIN_ROLE_NAMES.has(res.metadata.name)) {
      diagnostics.push(
        at(
          res,
          'API_ERR_INVALID',
          `role name ${JSON.stringify(res.metadata.name)} is reserved for a built-in role`,
          'bind the built-in role with a RoleBinding, or choose another name',
        ),
      );
      continue;
    }
    objects.push({
      kind: k,
      object: res as unknown as ApiObject,
      line: res.source?.line ?? 0,
      column: res.source?.column ?? 0,
    });
  }
  // Errors the engine finds on its own (selectors that cannot compile), as `validate` reports.
  if (diagnostics.length === 0) {
    const policy = objects
      .filter((o) => !o.kind.access)
      .map((o) => o.object as unknown as Resource);
    diagnostics.push(
      ...compile(policy)
        .diagnostics()
        .filter((d) => d.severity === 'error'),
    );
  }
  return { objects, diagnostics };
}
