// Types of scripts/command-bundle.mjs (plain JavaScript, run before tsx is loaded).
import type { BuildResult } from 'esbuild';

export type BundleName = 'sidecar' | 'cni';
export type BundleResult =
  | { readonly path: string; readonly reason?: undefined }
  | { readonly path?: undefined; readonly reason: string };

export declare const ENTRIES: Readonly<Record<BundleName, string>>;
export declare function cacheDir(): string;
export declare function freshBundle(name?: BundleName): string | undefined;
export declare function bundleEntry(
  entry: string,
  outfile: string,
): Promise<BuildResult<{ write: false; metafile: true }>>;
export declare function buildBundle(name?: BundleName): Promise<string>;
export declare function commandBundle(name: BundleName): Promise<BundleResult>;
export declare function sidecarBundle(): Promise<BundleResult>;
