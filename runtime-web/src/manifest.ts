/**
 * manifest.json: the JSON Schema check (formats/manifest.schema.json, compiled at build time into
 * a standalone validator) and the rules the schema cannot say (formats/README.md "Paths",
 * "Versioning"). Its types are generated from the schema too (formats.ts).
 */
import type { ErrorObject } from "ajv";

import { BundleError } from "./errors.js";
import {
  FORMAT,
  FORMAT_VERSION,
  MANIFEST_NAME,
  MAX_MANIFEST_BYTES,
  MAX_PATH,
  type Manifest,
} from "./formats.js";
import { manifest as schemaValidator } from "./generated/validators.js";

const SEGMENT = /^[A-Za-z0-9._-]+$/;

/** The schema's standalone validator (generated code: no `new Function` at run time). */
const validator = schemaValidator as ((doc: unknown) => boolean) & {
  errors?: ErrorObject[] | null;
};

/** The weight quantization schemes this runtime reads (formats/README.md, "Quantized weights"). */
export const QUANTIZATION_SCHEMES = ["q4f16", "q8f16"] as const;

function validate(doc: unknown): ErrorObject[] {
  return validator(doc) ? [] : (validator.errors ?? []);
}

/**
 * A bundle-relative path must be POSIX, relative, at most 512 characters of segments of
 * `[A-Za-z0-9._-]`, with no empty, `.` or `..` segment. `where` names the file that holds it.
 */
export function checkPath(path: unknown, where: string): string {
  if (typeof path !== "string" || path.length === 0) {
    throw new BundleError(`${where}: path must be a non-empty string`, { file: where });
  }
  const shown = JSON.stringify(path);
  if (path.includes("\\")) {
    throw new BundleError(`${where}: path ${shown} contains a backslash`, {
      file: where,
      hint: "bundle paths use '/'",
    });
  }
  if (path.startsWith("/") || /^[A-Za-z]:/.test(path)) {
    throw new BundleError(`${where}: path ${shown} is absolute`, {
      file: where,
      hint: "bundle paths are relative to the bundle root",
    });
  }
  if (path.length > MAX_PATH)
    throw new BundleError(`${where}: path ${shown} is longer than ${MAX_PATH}`, { file: where });
  for (const seg of path.split("/")) {
    if (seg === "" || seg === "." || seg === "..") {
      throw new BundleError(`${where}: path ${shown} has an empty, '.' or '..' segment`, {
        file: where,
        hint: "the manifest is forged or damaged",
      });
    }
    if (!SEGMENT.test(seg))
      throw new BundleError(`${where}: path ${shown} has a character outside [A-Za-z0-9._-]`, {
        file: where,
      });
  }
  return path;
}

function describe(error: ErrorObject): string {
  const where = error.instancePath.replace(/^\//, "") || "(root)";
  const message = `${error.message ?? "is invalid"}${error.params && "allowedValues" in error.params ? ` ${JSON.stringify(error.params.allowedValues)}` : ""}`;
  return `${where}: ${message.length <= 160 ? message : `${message.slice(0, 157)}...`}`;
}

/** A quantization scheme this runtime does not know is refused by name, before the schema. */
function checkScheme(quantization: unknown, where: string): void {
  if (typeof quantization !== "object" || quantization === null) return;
  const scheme = (quantization as { scheme?: unknown }).scheme;
  if (!(QUANTIZATION_SCHEMES as readonly unknown[]).includes(scheme)) {
    throw new BundleError(
      `${where}: weights are quantized with scheme ${JSON.stringify(scheme)}, which this runtime does not read (it reads ${QUANTIZATION_SCHEMES.join(", ")})`,
      {
        file: where,
        hint: "upgrade sdpack's web runtime, or load an unquantized bundle of the model",
      },
    );
  }
}

/** Check `doc` against the schema and the rules it cannot say; return it typed. */
export function validateManifest(doc: unknown, where: string = MANIFEST_NAME): Manifest {
  if (typeof doc !== "object" || doc === null || Array.isArray(doc)) {
    throw new BundleError(`${where}: not a JSON object`, { file: where });
  }
  const obj = doc as Record<string, unknown>;
  if (obj.format !== FORMAT) {
    throw new BundleError(
      `${where}: not an sdpack bundle manifest (format=${JSON.stringify(obj.format)})`,
      { file: where },
    );
  }
  if (obj.format_version !== FORMAT_VERSION) {
    throw new BundleError(
      `${where}: unknown format_version ${JSON.stringify(obj.format_version)} (this runtime reads ${FORMAT_VERSION})`,
      { file: where, hint: "upgrade sdpack's web runtime, or repack the model" },
    );
  }
  checkScheme(obj.quantization, where);
  if (Array.isArray(obj.files)) {
    obj.files.forEach((entry, i) => {
      if (typeof entry === "object" && entry !== null)
        checkPath((entry as { path?: unknown }).path, `${where}: files[${i}]`);
    });
  }
  checkReferencedPaths(obj, where);
  const errors = validate(doc);
  if (errors.length) {
    throw new BundleError(`${where}: schema violation at ${describe(errors[0])}`, {
      file: where,
      hint: "the manifest is forged or damaged",
    });
  }
  const manifest = doc as Manifest;
  checkReferences(manifest, where);
  return manifest;
}

/** Path rules for the paths the manifest refers to, before the schema (for a clearer message). */
function checkReferencedPaths(obj: Record<string, unknown>, where: string): void {
  const values = (o: unknown) => (typeof o === "object" && o !== null ? Object.values(o) : []);
  for (const comp of values(obj.components)) {
    const weights = (comp as { weights?: unknown })?.weights;
    if (typeof weights === "string") checkPath(weights, where);
  }
  for (const target of values(obj.targets)) {
    for (const lib of values((target as { libs?: unknown })?.libs))
      if (typeof lib === "string") checkPath(lib, where);
  }
  const files = (obj.tokenizer as { files?: unknown })?.files;
  if (Array.isArray(files)) for (const f of files) if (typeof f === "string") checkPath(f, where);
}

function checkReferences(m: Manifest, where: string): void {
  const paths = m.files.map((f) => f.path);
  const listed = new Set(paths);
  if (listed.size !== paths.length)
    throw new BundleError(`${where}: a file is listed twice`, { file: where });
  if (listed.has(MANIFEST_NAME))
    throw new BundleError(`${where}: manifest.json must not list itself`, { file: where });
  for (const ref of referencedPaths(m)) {
    if (!listed.has(ref))
      throw new BundleError(`${where}: ${ref} is referenced but not listed in files`, {
        file: where,
      });
  }
}

/**
 * The files the manifest names outside `files`: each component's tensor index, each target's
 * libraries and the tokenizer's files. The rest of `files` are the weight shards the indexes list.
 */
export function referencedPaths(m: Manifest): Set<string> {
  return new Set([
    ...Object.values(m.components).map((c) => c.weights),
    ...Object.values(m.targets).flatMap((t) => Object.values(t.libs)),
    ...m.tokenizer.files,
  ]);
}

/** Parse and validate manifest bytes (or text). Errors name `where`. */
export function parseManifest(
  data: Uint8Array | ArrayBuffer | string,
  where: string = MANIFEST_NAME,
): Manifest {
  const size = typeof data === "string" ? data.length : data.byteLength;
  if (size > MAX_MANIFEST_BYTES)
    throw new BundleError(`${where}: ${size} bytes is too large for a manifest`, { file: where });
  let doc: unknown;
  try {
    const text =
      typeof data === "string" ? data : new TextDecoder("utf-8", { fatal: true }).decode(data);
    doc = JSON.parse(text);
  } catch (err) {
    throw new BundleError(`${where}: not valid JSON (${(err as Error).message})`, {
      file: where,
      cause: err,
    });
  }
  return validateManifest(doc, where);
}
