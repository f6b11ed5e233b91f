// Error codes the loader emits, each with its HTTP status (STYLE 7). Part of errors.ts.

export const LOAD_ERRORS = {
  POLICY_ERR_YAML_SYNTAX: {
    status: 400,
    summary: 'The text is not valid YAML or JSON.',
  },
  POLICY_ERR_NOT_AN_OBJECT: {
    status: 400,
    summary: 'A document is not a mapping with apiVersion, kind and metadata.',
  },
  POLICY_ERR_UNKNOWN_KIND: {
    status: 400,
    summary: 'The apiVersion and kind name no resource Palisade accepts.',
  },
  POLICY_ERR_UNKNOWN_FIELD: {
    status: 400,
    summary: 'A field is not part of the resource schema (often a misspelling).',
  },
  POLICY_ERR_MISSING_FIELD: {
    status: 400,
    summary: 'A required field is absent.',
  },
  POLICY_ERR_INVALID_TYPE: {
    status: 400,
    summary: 'A field has the wrong type (string, number, list, mapping...).',
  },
  POLICY_ERR_INVALID_VALUE: {
    status: 400,
    summary: 'A field has a value outside what the upstream API allows.',
  },
  POLICY_ERR_INVALID_SELECTOR: {
    status: 400,
    summary: 'A Calico selector does not parse.',
  },
  POLICY_ERR_LIMIT_EXCEEDED: {
    status: 413,
    summary: 'A size, count, depth or alias limit was exceeded.',
  },
  POLICY_ERR_DUPLICATE: {
    status: 409,
    summary: 'Two documents define the same kind, namespace and name.',
  },
  POLICY_ERR_UNSUPPORTED: {
    status: 422,
    summary: 'A valid upstream feature Palisade does not support (it is refused, never ignored).',
  },
} as const;

export type LoadErrorCode = keyof typeof LOAD_ERRORS;
