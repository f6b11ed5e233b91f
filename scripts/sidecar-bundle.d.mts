// Types of scripts/sidecar-bundle.mjs (plain JavaScript, run before tsx is loaded).
import type { BuildResult } from 'esbuild';

export declare function cacheDir(): string;
export declare function freshBundle(): string | undefined;
export declare function bundleEntry(
  entry: string,
  outfile: string,
): Promise<BuildResult<{ write: false; metafile: true }>>;
export declare function buildBundle(): Promise<string>;
export declare function sidecarBundle(): Promise<
  | { readonly path: string; readonly reason?: undefined }
  | { readonly path?: undefined; readonly reason: string }
>;
