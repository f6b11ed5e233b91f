// The access-control kinds of our own group `palisade.dev/v1` (DESIGN §7): Role and RoleBinding.
// Only the API server accepts them (LoadOptions.accessKinds); `palisade validate` and the engine
// never see them. Owns: their schema. Must never: decide what a role allows (the server does).

import type { KindSpec } from './kinds.js';
import { checkSubdomain } from './kinds.js';
import type { Schema } from './schema.js';

export const ACCESS_GROUP = 'palisade.dev/v1';

const VERBS = ['get', 'list', 'watch', 'create', 'update', 'delete', '*'] as const;

const name: Schema = { t: 'string', max: 253 };
const names: Schema = { t: 'list', of: name, max: 1000 };

const roleRule: Schema = {
  t: 'obj',
  fields: {
    verbs: { t: 'list', of: { t: 'enum', values: VERBS }, max: 16 },
    kinds: names,
    namespaces: names,
    tiers: names,
    names: names,
  },
  required: ['verbs', 'kinds'],
};

const subject: Schema = {
  t: 'obj',
  fields: {
    kind: { t: 'enum', values: ['User', 'Group', 'Node'] },
    name: { t: 'string', max: 1024 },
  },
  required: ['kind', 'name'],
};

export const ACCESS_KINDS: ReadonlyMap<string, KindSpec> = new Map<string, KindSpec>([
  [
    `${ACCESS_GROUP}/Role`,
    {
      namespaced: false,
      spec: undefined,
      extra: { rules: { t: 'list', of: roleRule, max: 1000 } },
    },
  ],
  [
    `${ACCESS_GROUP}/RoleBinding`,
    {
      namespaced: false,
      spec: undefined,
      extra: {
        subjects: { t: 'list', of: subject, max: 10000 },
        roleRef: {
          t: 'obj',
          fields: {
            kind: { t: 'enum', values: ['Role'] },
            name: { t: 'string', check: checkSubdomain },
          },
          required: ['name'],
        },
      },
    },
  ],
]);
