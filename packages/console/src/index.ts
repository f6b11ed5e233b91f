// The web console's assets, served by `palisade server` under /console/: the page, its style and
// one script bundled (esbuild, at first request, cached) from packages/console/web with the
// policy core, so the browser validates with the same code as the server. The page talks only to
// the API of its own origin with the token a person signs in with.
// Owns: the asset routes and their headers (a strict Content-Security-Policy: scripts and styles
// from this origin only, no inline script, no framing). Must never: serve a file outside its own
// three, or embed a credential.

import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export interface AssetResponse {
  readonly status: number;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: string;
}

const CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

const SECURITY = {
  'content-security-policy': CSP,
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
} as const;

let bundle: Promise<string> | undefined;

/** The browser bundle (built once per process). */
export function consoleBundle(): Promise<string> {
  bundle ??= (async () => {
    const { build } = await import('esbuild');
    const r = await build({
      entryPoints: [fileURLToPath(new URL('../web/main.ts', import.meta.url))],
      bundle: true,
      format: 'esm',
      platform: 'browser',
      target: 'es2022',
      minify: true,
      write: false,
      legalComments: 'none',
      logLevel: 'silent',
    });
    return r.outputFiles[0]?.text ?? '';
  })();
  bundle.catch(() => (bundle = undefined));
  return bundle;
}

function file(name: string): string {
  return readFileSync(new URL(`./static/${name}`, import.meta.url), 'utf8');
}

/** Answers /console/ paths (and redirects / there); undefined for any other path. */
export async function consoleRoute(path: string): Promise<AssetResponse | undefined> {
  if (path === '/' || path === '/console')
    return { status: 302, headers: { location: '/console/', ...SECURITY }, body: '' };
  const type =
    path === '/console/' || path === '/console/index.html'
      ? 'text/html; charset=utf-8'
      : path === '/console/style.css'
        ? 'text/css; charset=utf-8'
        : path === '/console/app.js'
          ? 'text/javascript; charset=utf-8'
          : undefined;
  if (type === undefined) return undefined;
  const body =
    path === '/console/app.js'
      ? await consoleBundle()
      : file(path === '/console/style.css' ? 'style.css' : 'index.html');
  return {
    status: 200,
    headers: { 'content-type': type, 'cache-control': 'no-cache', ...SECURITY },
    body,
  };
}
