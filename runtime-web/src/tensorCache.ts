/**
 * TVM's tensor-cache layout (`tensor-cache.json` + raw shards): the index, its structural
 * checks (every record inside its shard, shape × dtype = nbytes) and typed views per tensor.
 */
import { BundleError, DAMAGED } from "./errors.js";
import { DTYPE_SIZES, type Dtype } from "./formats.js";
import { checkPath } from "./manifest.js";

export { DTYPE_SIZES };

export const INDEX_NAME = "tensor-cache.json";

export interface TensorRecord {
  name: string;
  shape: number[];
  dtype: Dtype;
  format: "raw";
  nbytes: number;
  byteOffset: number;
}

export interface ShardRecord {
  dataPath: string;
  format: "raw-shard";
  nbytes: number;
  records: TensorRecord[];
}

export interface TensorCacheIndex {
  metadata: Record<string, unknown>;
  records: ShardRecord[];
}

/** float16 comes as its raw bits (Uint16Array): JavaScript has no portable Float16Array yet. */
export type TensorData =
  | Float32Array
  | Uint16Array
  | Int32Array
  | Uint32Array
  | BigInt64Array
  | Uint8Array;

export interface Tensor {
  name: string;
  dtype: Dtype;
  shape: number[];
  /** A view into the decoded shard (no copy). */
  data: TensorData;
  /** The tensor's bytes, little-endian, C order (a view into the decoded shard). */
  bytes: Uint8Array;
}

const isInt = (v: unknown): v is number => typeof v === "number" && Number.isSafeInteger(v);

/** Parse and check a tensor-cache.json (bytes, text or parsed JSON); `where` names it in errors. */
export function parseTensorCache(
  data: Uint8Array | string | unknown,
  where: string,
): TensorCacheIndex {
  let doc: unknown = data;
  if (typeof data === "string" || data instanceof Uint8Array) {
    try {
      doc = JSON.parse(
        typeof data === "string" ? data : new TextDecoder("utf-8", { fatal: true }).decode(data),
      );
    } catch (err) {
      throw new BundleError(`${where}: not valid JSON (${(err as Error).message})`, {
        file: where,
        hint: DAMAGED,
      });
    }
  }
  const bad = (why: string) => new BundleError(`${where}: ${why}`, { file: where, hint: DAMAGED });
  const index = doc as TensorCacheIndex;
  if (typeof doc !== "object" || doc === null || !Array.isArray(index.records))
    throw bad("malformed tensor-cache index (no records)");
  const names = new Set<string>();
  for (const shard of index.records) {
    if (
      typeof shard !== "object" ||
      shard === null ||
      !Array.isArray(shard.records) ||
      !isInt(shard.nbytes) ||
      shard.nbytes < 0
    ) {
      throw bad("malformed tensor-cache index (bad shard record)");
    }
    checkPath(shard.dataPath, where);
    for (const rec of shard.records) checkRecord(rec, shard, names, bad);
  }
  return index;
}

function checkRecord(
  rec: TensorRecord,
  shard: ShardRecord,
  names: Set<string>,
  bad: (why: string) => BundleError,
): void {
  if (typeof rec !== "object" || rec === null || typeof rec.name !== "string")
    throw bad("malformed tensor-cache index (bad tensor record)");
  const label = `tensor ${JSON.stringify(rec.name)}`;
  if (names.has(rec.name)) throw bad(`${label} is listed twice`);
  names.add(rec.name);
  const size: number | undefined = DTYPE_SIZES[rec.dtype];
  if (size === undefined || !Object.hasOwn(DTYPE_SIZES, rec.dtype))
    throw bad(`${label} has unsupported dtype ${JSON.stringify(rec.dtype)}`);
  if (!Array.isArray(rec.shape) || !rec.shape.every((d) => isInt(d) && d >= 0))
    throw bad(`${label} has a malformed shape`);
  const count = rec.shape.reduce((a, b) => a * b, 1);
  if (!isInt(rec.nbytes) || count * size !== rec.nbytes)
    throw bad(`${label}: shape/dtype do not match nbytes`);
  if (!isInt(rec.byteOffset) || rec.byteOffset < 0 || rec.byteOffset + rec.nbytes > shard.nbytes) {
    throw bad(`${label} lies outside its shard ${shard.dataPath}`);
  }
  if (rec.byteOffset % size !== 0)
    throw bad(`${label} is not aligned to its ${size}-byte elements`);
}

function view(dtype: Dtype, bytes: Uint8Array): TensorData {
  const n = bytes.byteLength / DTYPE_SIZES[dtype];
  switch (dtype) {
    case "float32":
      return new Float32Array(bytes.buffer, bytes.byteOffset, n);
    case "float16":
      return new Uint16Array(bytes.buffer, bytes.byteOffset, n);
    case "int32":
      return new Int32Array(bytes.buffer, bytes.byteOffset, n);
    case "uint32":
      return new Uint32Array(bytes.buffer, bytes.byteOffset, n);
    case "int64":
      return new BigInt64Array(bytes.buffer, bytes.byteOffset, n);
    default:
      return bytes;
  }
}

/**
 * Typed views of every tensor in one decoded shard, in record order. `raw` must hold exactly
 * `shard.nbytes` bytes (the manifest's raw_size, already checked against its sha256).
 */
export function shardTensors(raw: Uint8Array, shard: ShardRecord, where: string): Tensor[] {
  if (raw.byteLength !== shard.nbytes) {
    throw new BundleError(
      `${where}: shard ${shard.dataPath} holds ${raw.byteLength} bytes, the index says ${shard.nbytes}`,
      {
        file: where,
        hint: DAMAGED,
      },
    );
  }
  // Typed arrays need element-aligned offsets: a decoded shard starts a fresh buffer, anything else is copied once.
  const base = raw.byteOffset % 8 === 0 ? raw : raw.slice();
  return shard.records.map((rec) => {
    const bytes = base.subarray(rec.byteOffset, rec.byteOffset + rec.nbytes);
    return {
      name: rec.name,
      dtype: rec.dtype,
      shape: [...rec.shape],
      data: view(rec.dtype, bytes),
      bytes,
    };
  });
}
