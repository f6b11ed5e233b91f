// Label key validation: an optional DNS-subdomain prefix and '/', then a name of at most 63
// characters that begins and ends with [A-Za-z0-9] and may hold '-', '_' and '.' inside.

const NAME = /^[A-Za-z0-9](?:[A-Za-z0-9_.-]*[A-Za-z0-9])?$/;
const DNS_LABEL = /^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$/;

export const MAX_KEY_NAME_LENGTH = 63;
export const MAX_KEY_PREFIX_LENGTH = 253;

/** Returns why `key` is not a valid label key, or undefined when it is. */
export function labelKeyProblem(key: string): string | undefined {
  const slash = key.indexOf('/');
  let name = key;
  if (slash >= 0) {
    const prefix = key.slice(0, slash);
    name = key.slice(slash + 1);
    if (name.includes('/')) return 'a label key holds at most one /';
    if (prefix.length === 0) return 'the prefix before / is empty';
    if (prefix.length > MAX_KEY_PREFIX_LENGTH) {
      return `the prefix is longer than ${MAX_KEY_PREFIX_LENGTH} characters`;
    }
    if (!prefix.split('.').every((part) => part.length <= 63 && DNS_LABEL.test(part))) {
      return 'the prefix must be a DNS subdomain (lowercase letters, digits, - and .)';
    }
  }
  if (name.length === 0) return 'the name is empty';
  if (name.length > MAX_KEY_NAME_LENGTH) {
    return `the name is longer than ${MAX_KEY_NAME_LENGTH} characters`;
  }
  if (!NAME.test(name)) {
    return 'the name must begin and end with a letter or digit, with only - _ . inside';
  }
  return undefined;
}

export function isValidLabelKey(key: string): boolean {
  return labelKeyProblem(key) === undefined;
}

/** Alias of {@link labelKeyProblem}: the reason `key` is invalid, or undefined. */
export const validLabelKey: (key: string) => string | undefined = labelKeyProblem;
