/**
 * Lock records (manifests/lock.schema.json), as `packer resolve --lock-out` writes them: a Hub
 * version pinned to its commit and its manifest's sha256. Checked against the schema (its
 * generated standalone validator) and for what a browser needs besides: an http(s) endpoint.
 */
import type { ErrorObject } from "ajv";

import { BundleError } from "./errors.js";
import { hubManifestUrl } from "./fetch.js";
import { COMMIT_PATTERN, LOCK_VERSION, SHA256_PATTERN, type LockRecord } from "./formats.js";
import { lock as schemaValidator } from "./generated/validators.js";

export type { LockRecord };

const COMMIT = new RegExp(COMMIT_PATTERN);
const SHA256 = new RegExp(SHA256_PATTERN);
const validator = schemaValidator as ((doc: unknown) => boolean) & {
  errors?: ErrorObject[] | null;
};

/**
 * The manifest URL and pinned manifest sha256 of a lock record. The fields users get wrong most
 * are checked one by one (for a message that names the field); the schema checks the rest.
 */
export function lockManifest(lock: LockRecord): { url: string; manifestSha256: string } {
  const bad = (why: string) =>
    new BundleError(`lock record: ${why}`, { hint: "write it with `packer resolve --lock-out`" });
  if (typeof lock !== "object" || lock === null) throw bad("not an object");
  if (lock.lock_version !== LOCK_VERSION)
    throw bad(`unknown lock_version ${JSON.stringify(lock.lock_version)}`);
  if (typeof lock.repo !== "string" || !/^[^/\s]+\/[^/\s]+$/.test(lock.repo))
    throw bad("repo must be ORG/NAME");
  if (typeof lock.commit !== "string" || !COMMIT.test(lock.commit))
    throw bad("commit must be a 40-hex commit sha");
  if (typeof lock.manifest_sha256 !== "string" || !SHA256.test(lock.manifest_sha256))
    throw bad("manifest_sha256 must be 64 hex digits");
  if (typeof lock.endpoint !== "string" || !/^https?:\/\//.test(lock.endpoint))
    throw bad("endpoint must be an http(s) URL");
  if (!validator(lock)) {
    const error = validator.errors?.[0];
    const where = error?.instancePath.replace(/^\//, "") || "(root)";
    throw bad(`not a valid lock record (${where}: ${error?.message ?? "is invalid"})`);
  }
  return {
    url: hubManifestUrl(lock.repo, lock.commit, lock.endpoint),
    manifestSha256: lock.manifest_sha256,
  };
}
