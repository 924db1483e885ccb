/**
 * What names a model, and the one manifest URL a load of it fetches. A model is named by a Hub
 * pin — `ORG/NAME@VERSION` (`1.2.0` or `v1.2.0`) or `ORG/NAME@<40-hex commit>` — by a manifest
 * or bundle URL, or by a lock record (`packer resolve --lock-out`). A version is resolved to its
 * commit through the Hub API once (`GET {endpoint}/api/models/ORG/NAME/revision/v1.2.0` → `sha`,
 * which `packer serve` answers too), and the load then goes by commit: every file comes from one
 * immutable snapshot, however the tag moves meanwhile.
 *
 *   const { manifestUrl, commit } = await resolveModel("sdpack/tiny-sd@1.0.0");
 *   // https://huggingface.co/sdpack/tiny-sd/resolve/<commit>/manifest.json
 */
import { BundleError } from "./errors.js";
import { hubManifestUrl, resolveBundleUrl } from "./fetch.js";
import { COMMIT_PATTERN, REPO_ID_PATTERN, SEMVER_PATTERN, type LockRecord } from "./formats.js";
import { lockManifest } from "./lock.js";

export type { LockRecord };
export { lockManifest };

/** The Hub `loadModel` resolves `ORG/NAME@…` specs on unless told otherwise. */
export const HUB_ENDPOINT = "https://huggingface.co";

/** A model as `loadModel`, `hasModelInCache` and `deleteModelFromCache` take it. */
export type ModelSpec = string | URL | LockRecord;

/** A spec, told apart: a URL (as given), a Hub pin (a version or a commit), or a checked lock record. */
export type ParsedSpec =
  | { kind: "url"; url: string | URL }
  | { kind: "hub"; repo: string; version?: string; commit?: string }
  | { kind: "lock"; lock: LockRecord };

/** Where a spec's manifest is, and what is known about it before it is fetched. */
export interface ResolvedModel {
  manifestUrl: string;
  /** The manifest's pinned sha256 (lock records). */
  manifestSha256?: string;
  /** The repository and version the manifest must say it is (Hub pins and lock records). */
  repo?: string;
  version?: string;
  /** The Hub commit the files are read at, where known before the manifest is fetched. */
  commit?: string;
}

export interface ResolveOptions {
  /** The Hub (default https://huggingface.co); a `packer serve` URL for a directory hub. */
  endpoint?: string;
  fetch?: typeof globalThis.fetch;
  signal?: AbortSignal;
}

const COMMIT = new RegExp(COMMIT_PATTERN);
const REPO_ID = new RegExp(REPO_ID_PATTERN);
const SEMVER = new RegExp(SEMVER_PATTERN);
/** Strings read as URLs: absolute (`https://…`), or relative to the page only when they say so. */
const URL_LIKE = /^([a-z][a-z0-9+.-]*:\/\/|\/|\.\.?\/)/i;

const ACCEPTED = "ORG/NAME@VERSION, ORG/NAME@<40-hex commit>, a manifest URL or a lock record";
const EXAMPLES =
  "e.g. sdpack/tiny-sd@1.0.0, sdpack/tiny-sd@<commit sha>, https://huggingface.co/ORG/NAME/resolve/<commit>/manifest.json " +
  "(a URL relative to the page starts with / or ./), or the JSON `packer resolve --lock-out` writes";

function badSpec(spec: string, why: string): BundleError {
  return new BundleError(`model ${JSON.stringify(spec)}: ${why}; accepted: ${ACCEPTED}`, {
    hint: EXAMPLES,
  });
}

/** `ORG/NAME` as the Hub accepts it (the manifest schema's pattern; no `--` or `..`, which the Hub refuses). */
function isRepoId(repo: string): boolean {
  return REPO_ID.test(repo) && !repo.includes("--") && !repo.includes("..");
}

/**
 * Tell a spec's form (no network). Throws a `BundleError` naming the spec and the accepted forms
 * for anything else: a repo id without `@`, a revision that is neither a version nor a commit
 * sha, a string that is not a URL.
 */
export function parseModelSpec(spec: ModelSpec): ParsedSpec {
  if (spec instanceof URL) return { kind: "url", url: spec };
  if (typeof spec === "object" && spec !== null) {
    lockManifest(spec);
    return { kind: "lock", lock: spec };
  }
  if (typeof spec !== "string")
    throw badSpec(String(spec), `a ${spec === null ? "null" : typeof spec} is not a model`);
  if (URL_LIKE.test(spec)) return { kind: "url", url: spec };
  const at = spec.indexOf("@");
  const repo = at < 0 ? spec : spec.slice(0, at);
  const rev = at < 0 ? "" : spec.slice(at + 1);
  if (!isRepoId(repo)) {
    throw badSpec(
      spec,
      `${JSON.stringify(repo)} is not a repository id (ORG/NAME of letters, digits, '.', '_', '-'), nor is the spec a URL`,
    );
  }
  if (at < 0) throw badSpec(spec, "it does not say which version (add @VERSION or @<commit>)");
  if (COMMIT.test(rev)) return { kind: "hub", repo, commit: rev };
  const version = /^[vV]/.test(rev) ? rev.slice(1) : rev;
  if (!SEMVER.test(version))
    throw badSpec(
      spec,
      `${JSON.stringify(rev)} is neither a version (1.2.0 or v1.2.0) nor a 40-hex commit sha`,
    );
  return { kind: "hub", repo, version };
}

/** The commit a Hub-style URL names (`…/resolve/<40-hex>/…`), if it names one. */
export function commitInUrl(url: string | URL): string | undefined {
  return /\/resolve\/([0-9a-f]{40})\//.exec(String(url))?.[1];
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * The commit a revision (a tag such as `v1.2.0`, a branch, or a commit) of a Hub repository
 * points to now: the Hub API's `GET {endpoint}/api/models/{repo}/revision/{revision}` → `sha`.
 */
export async function resolveRevision(
  repo: string,
  revision: string,
  opts: ResolveOptions = {},
): Promise<string> {
  const endpoint = (opts.endpoint ?? HUB_ENDPOINT).replace(/\/+$/, "");
  const url = `${endpoint}/api/models/${repo}/revision/${encodeURIComponent(revision)}`;
  const what = `${repo}@${revision}`;
  let response: Response;
  try {
    response = await (opts.fetch ?? globalThis.fetch)(url, {
      signal: opts.signal,
      headers: { accept: "application/json" },
    });
  } catch (err) {
    if (opts.signal?.aborted) throw err;
    throw new BundleError(`${what}: could not ask ${endpoint} for the commit (${messageOf(err)})`, {
      hint: "check the network connection and the endpoint, then load again",
      cause: err,
    });
  }
  const body = await response.text().catch(() => "");
  if (!response.ok) {
    const code = response.headers.get("x-error-code");
    if (code === "RevisionNotFound") {
      throw new BundleError(`${what}: no such revision in ${repo} on ${endpoint}`, {
        hint: "check the version against the repository's tags (each version is published as tag vVERSION)",
      });
    }
    if (code === "RepoNotFound" || response.status === 401) {
      throw new BundleError(
        `${what}: repository ${repo} not found on ${endpoint} (or it is private)`,
        { hint: "check the repository id and the endpoint" },
      );
    }
    throw new BundleError(`${what}: HTTP ${response.status} ${response.statusText} from ${url}`, {
      hint:
        response.status >= 500
          ? "the Hub failed; try again later"
          : "check the repository id, the version and the endpoint",
    });
  }
  let sha: unknown;
  try {
    sha = (JSON.parse(body) as { sha?: unknown }).sha;
  } catch {
    sha = undefined;
  }
  if (typeof sha !== "string" || !COMMIT.test(sha)) {
    throw new BundleError(`${what}: ${url} answered without a commit sha`, {
      hint: "is the endpoint a Hugging Face Hub (or `packer serve`)?",
    });
  }
  return sha;
}

/**
 * Where a spec's manifest is: a URL as it is (resolved against the page); a commit pin or a lock
 * record at its commit; a version pin at the commit its tag `vVERSION` points to now (one Hub API
 * call). The repository and version a pin names are returned so the load can check the manifest
 * against them.
 */
export async function resolveModel(
  spec: ModelSpec,
  opts: ResolveOptions = {},
): Promise<ResolvedModel> {
  const parsed = parseModelSpec(spec);
  if (parsed.kind === "url") {
    const { manifestUrl } = resolveBundleUrl(parsed.url);
    return { manifestUrl, commit: commitInUrl(manifestUrl) };
  }
  if (parsed.kind === "lock") {
    const { lock } = parsed;
    const { url, manifestSha256 } = lockManifest(lock);
    return {
      manifestUrl: url,
      manifestSha256,
      repo: lock.repo,
      version: lock.version,
      commit: lock.commit,
    };
  }
  const { repo, version } = parsed;
  const commit = parsed.commit ?? (await resolveRevision(repo, `v${version}`, opts));
  return {
    manifestUrl: hubManifestUrl(repo, commit, opts.endpoint ?? HUB_ENDPOINT),
    repo,
    version,
    commit,
  };
}
