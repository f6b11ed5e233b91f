// Names and namespaces as the server accepts them in paths, bodies and store keys: DNS-1123, so a
// name can never carry a path separator, "..", NUL or other characters that would let it escape
// its key prefix. Owns: that check. Must never: be bypassed on any path into the store.

const SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

/** A problem with a resource name (DNS-1123 subdomain, at most 253 characters), or undefined. */
export function checkResourceName(name: string): string | undefined {
  if (name.length === 0) return 'the name is empty';
  if (name.length > 253) return `the name is ${name.length} characters long; the limit is 253`;
  if (!SUBDOMAIN.test(name))
    return `${JSON.stringify(name.slice(0, 80))} is not a valid name: use lower-case letters, digits, "-" and ".", starting and ending with a letter or digit (no "/", "..", spaces or other characters)`;
  return undefined;
}

/** A problem with a namespace (DNS-1123 label, at most 63 characters), or undefined. */
export function checkNamespaceName(ns: string): string | undefined {
  if (ns.length === 0) return 'the namespace is empty';
  if (ns.length > 63) return `the namespace is ${ns.length} characters long; the limit is 63`;
  if (!LABEL.test(ns))
    return `${JSON.stringify(ns.slice(0, 80))} is not a valid namespace: use lower-case letters, digits and "-", starting and ending with a letter or digit`;
  return undefined;
}
