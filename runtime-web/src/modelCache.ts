/**
 * A model's files in the content cache: whether a load would find them all there, and removing
 * them. The cache keys files by sha256 only, so both read the model's manifest (from the network:
 * it names the files) and look its files up by hash.
 *
 * Files shared between models: identical files (a shard two versions have in common) are stored
 * once. `deleteModelFromCache` removes every file the model lists, shared ones included, so the
 * space is freed and the model is gone from the cache; a model that shared them stays loadable
 * and fetches those files again on its next load. Name the models to leave whole in `keep`: files
 * they list too are not removed.
 *
 *   if (!(await hasModelInCache("sdpack/tiny-sd@1.0.0"))) showDownloadSize();
 *   await deleteModelFromCache("sdpack/tiny-sd@1.0.0", { keep: ["sdpack/tiny-sd@1.1.0"] });
 */
import { cacheHas, openCache, type CacheChoice, type ContentCache } from "./cache.js";
import { UnsupportedError } from "./errors.js";
import { fetchManifest } from "./fetch.js";
import type { FileEntry, Manifest } from "./formats.js";
import { resolveModel, type ModelSpec, type ResolveOptions } from "./modelSpec.js";
import { neededFiles } from "./variant.js";

export interface ModelCacheOptions extends ResolveOptions {
  /** The cache to look in (as `loadModel` takes it; default the Cache API). */
  cache?: CacheChoice;
}

/** The verified manifest a spec names (a version pin resolved on the Hub, a lock record's sha256 checked). */
async function manifestOf(spec: ModelSpec, opts: ResolveOptions): Promise<Manifest> {
  const resolved = await resolveModel(spec, opts);
  const { manifest } = await fetchManifest(resolved.manifestUrl, {
    fetch: opts.fetch,
    signal: opts.signal,
    manifestSha256: resolved.manifestSha256,
    expectModel:
      resolved.repo === undefined ? undefined : { id: resolved.repo, version: resolved.version },
  });
  return manifest;
}

async function allCached(cache: ContentCache, entries: FileEntry[]): Promise<boolean> {
  const found = await Promise.all(entries.map((e) => cacheHas(cache, e.sha256)));
  return found.every(Boolean);
}

/**
 * Whether `loadModel(spec)` would take every file from the cache: the tokenizer, weights and other
 * files, and the libraries of `variant` — by default of at least one WebGPU variant. False for a
 * bundle without WebGPU variants, and where there is no cache.
 */
export async function hasModelInCache(
  spec: ModelSpec,
  opts: ModelCacheOptions & { variant?: string } = {},
): Promise<boolean> {
  const cache = openCache(opts.cache);
  if (!cache) return false;
  const manifest = await manifestOf(spec, opts);
  const webgpu = Object.entries(manifest.targets).filter(([, t]) => t.kind === "webgpu");
  const variants =
    opts.variant === undefined ? webgpu : webgpu.filter(([name]) => name === opts.variant);
  if (opts.variant !== undefined && !variants.length) {
    throw new UnsupportedError(
      `no WebGPU variant ${JSON.stringify(opts.variant)} in ${manifest.model.id} ${manifest.model.version}`,
      `choose one of ${webgpu.map(([n]) => n).join(", ") || "(none)"}`,
    );
  }
  for (const [, target] of variants) {
    if (await allCached(cache, manifest.files.filter(neededFiles(manifest, target)))) return true;
  }
  return false;
}

/** What `deleteModelFromCache` did: files removed, and files left because a model in `keep` lists them. */
export interface DeletedModel {
  deleted: number;
  kept: number;
}

/**
 * Remove a model's files from the cache: every file its manifest lists (all variants), except
 * those that a model in `keep` lists too. Files shared with models not in `keep` are removed; those
 * models fetch them again when next loaded (see the module's note).
 */
export async function deleteModelFromCache(
  spec: ModelSpec,
  opts: ModelCacheOptions & { keep?: ModelSpec[] } = {},
): Promise<DeletedModel> {
  const cache = openCache(opts.cache);
  if (!cache) return { deleted: 0, kept: 0 };
  const manifest = await manifestOf(spec, opts);
  const keep = new Set<string>();
  for (const other of opts.keep ?? [])
    for (const f of (await manifestOf(other, opts)).files) keep.add(f.sha256);
  let deleted = 0;
  let kept = 0;
  for (const sha256 of new Set(manifest.files.map((f) => f.sha256))) {
    if (!(await cacheHas(cache, sha256))) continue;
    if (keep.has(sha256)) {
      kept += 1;
      continue;
    }
    await cache.delete(sha256);
    deleted += 1;
  }
  return { deleted, kept };
}
