/**
 * Where a component's tensors are: its tensor-cache index checked against the manifest (every
 * shard listed with the raw size the index gives it, the tensor names in `params` order), which
 * says which shard files hold which parameters.
 */
import { BundleError, DAMAGED } from "./errors.js";
import type { Manifest } from "./formats.js";
import { checkPath } from "./manifest.js";
import {
  parseTensorCache,
  shardTensors,
  type ShardRecord,
  type Tensor,
  type TensorCacheIndex,
} from "./tensorCache.js";

/** The bundle path of a tensor-cache shard, as listed in the manifest (`D.zst`, or `D` unencoded). */
function shardPath(manifest: Manifest, indexPath: string, dataPath: string): string {
  const dir = indexPath.includes("/") ? indexPath.slice(0, indexPath.lastIndexOf("/") + 1) : "";
  const rel = checkPath(dir + dataPath, indexPath);
  for (const candidate of [`${rel}.zst`, rel]) {
    if (manifest.files.some((f) => f.path === candidate)) return candidate;
  }
  throw new BundleError(`${indexPath}: shard ${dataPath} is not listed in the manifest`, {
    file: indexPath,
    hint: DAMAGED,
  });
}

/** Where a component's tensors are: its index and, per shard file, the shard record; all checked against the manifest. */
export interface ComponentLayout {
  index: TensorCacheIndex;
  /** Bundle path of each shard file → its record in the index (index order). */
  shards: Map<string, ShardRecord>;
}

/**
 * A component's tensor index, checked against the manifest before any shard is used: every shard
 * listed (as `D.zst` or `D`) with the raw size the index gives it, and the tensors' names, in
 * order, equal to the component's `params`.
 */
export function componentLayout(
  manifest: Manifest,
  component: string,
  indexBytes: Uint8Array,
): ComponentLayout {
  const comp = manifest.components[component];
  if (!comp) throw new BundleError(`bundle has no component ${JSON.stringify(component)}`);
  const index = parseTensorCache(indexBytes, comp.weights);
  const shards = new Map<string, ShardRecord>();
  const names: string[] = [];
  for (const shard of index.records) {
    const path = shardPath(manifest, comp.weights, shard.dataPath);
    const entry = manifest.files.find((f) => f.path === path)!;
    const rawSize = entry.encoding ? entry.encoding.raw_size : entry.size;
    if (rawSize !== shard.nbytes) {
      throw new BundleError(
        `${path}: holds ${rawSize} raw bytes, ${comp.weights} says ${shard.nbytes}`,
        { file: path, hint: DAMAGED },
      );
    }
    if (shards.has(path))
      throw new BundleError(`${comp.weights}: shard ${shard.dataPath} is listed twice`, {
        file: comp.weights,
        hint: DAMAGED,
      });
    shards.set(path, shard);
    for (const rec of shard.records) names.push(rec.name);
  }
  if (names.length !== comp.params.length || names.some((n, i) => n !== comp.params[i])) {
    throw new BundleError(
      `${comp.weights}: tensor names/order differ from the manifest's params list`,
      { file: comp.weights, hint: DAMAGED },
    );
  }
  return { index, shards };
}

/** A component's tensors from loaded files, checked against the manifest (sizes, names, order). */
export function componentTensors(
  manifest: Manifest,
  component: string,
  files: Map<string, Uint8Array>,
): { index: TensorCacheIndex; tensors: Map<string, Tensor> } {
  const comp = manifest.components[component];
  if (!comp) throw new BundleError(`bundle has no component ${JSON.stringify(component)}`);
  const indexBytes = files.get(comp.weights);
  if (!indexBytes) throw new BundleError(`${comp.weights}: not loaded`, { file: comp.weights });
  const { index, shards } = componentLayout(manifest, component, indexBytes);
  const tensors = new Map<string, Tensor>();
  for (const [path, shard] of shards) {
    const raw = files.get(path);
    if (!raw) throw new BundleError(`${path}: not loaded`, { file: path });
    for (const t of shardTensors(raw, shard, path)) tensors.set(t.name, t);
  }
  return { index, tensors };
}
