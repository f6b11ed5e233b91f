// Diagnostics are data (STYLE 6): parsers and validators return them, never throw them.
// Owns: the Diagnostic shape and its plain-text rendering. Must never: decide exit codes or I/O.

export type Severity = 'error' | 'warning';

export interface Diagnostic {
  /** A stable code from the error catalogue (errors.ts), e.g. POLICY_ERR_UNKNOWN_FIELD. */
  readonly code: string;
  readonly severity: Severity;
  readonly message: string;
  /** How to fix it, when we can say. */
  readonly hint?: string;
  readonly file: string;
  /** 1-based; 0 when the problem concerns the whole file. */
  readonly line: number;
  /** 1-based; 0 when unknown. */
  readonly column: number;
  /** Field path inside the document, e.g. `spec.ingress[0].source.selector`. */
  readonly path?: string;
}

/** `file:line:col: error CODE: message` (DESIGN §5), plus the hint on its own line. */
export function formatDiagnostic(d: Diagnostic): string {
  const head = `${d.file}:${d.line}:${d.column}: ${d.severity} ${d.code}: ${d.message}`;
  return d.hint ? `${head}\n  hint: ${d.hint}` : head;
}

export function hasErrors(ds: readonly Diagnostic[]): boolean {
  return ds.some((d) => d.severity === 'error');
}

/** Orders diagnostics by file, line, column, then code, so output is stable. */
export function sortDiagnostics(ds: readonly Diagnostic[]): Diagnostic[] {
  return [...ds].sort(
    (a, b) =>
      a.file.localeCompare(b.file) ||
      a.line - b.line ||
      a.column - b.column ||
      a.code.localeCompare(b.code),
  );
}
