/**
 * Getting bytes over HTTP for the loader: bundle and Hub URLs, one GET into memory with a size
 * bound and retries (HTTP 5xx answers and network errors, also a connection that breaks
 * mid-body, are retried with exponential backoff; 4xx answers are not), and the manifest fetched,
 * pinned and validated.
 */
import { BundleError, DAMAGED, LoadAbortedError } from "./errors.js";
import { MANIFEST_NAME, MAX_MANIFEST_BYTES } from "./formats.js";
import { sha256Hex } from "./hash.js";
import type { Manifest } from "./formats.js";
import { checkPath, parseManifest } from "./manifest.js";
import type { LoadOptions, RetryOptions } from "./types.js";

const here = () => (globalThis as { location?: { href: string } }).location?.href;

/** The Hub URL of a bundle's manifest at `revision` (pin a commit for reproducible loads). */
export function hubManifestUrl(
  repo: string,
  revision = "main",
  endpoint = "https://huggingface.co",
): string {
  return `${endpoint.replace(/\/+$/, "")}/${repo}/resolve/${encodeURIComponent(revision)}/${MANIFEST_NAME}`;
}

/**
 * The manifest URL and the base URL of the bundle's files. Accepts a manifest URL (any host,
 * e.g. a Hub-style `…/resolve/{rev}/manifest.json`) or the bundle's folder URL.
 */
export function resolveBundleUrl(url: string | URL): { manifestUrl: string; baseUrl: string } {
  const u = new URL(String(url), here());
  if (!u.pathname.endsWith(`/${MANIFEST_NAME}`))
    u.pathname = u.pathname.replace(/\/*$/, `/${MANIFEST_NAME}`);
  const manifestUrl = u.href;
  const base = new URL(u.href);
  base.search = "";
  base.hash = "";
  base.pathname = base.pathname.slice(0, base.pathname.length - MANIFEST_NAME.length);
  return { manifestUrl, baseUrl: base.href };
}

export function fileUrl(baseUrl: string, path: string): string {
  return new URL(checkPath(path, MANIFEST_NAME), baseUrl).href;
}

/** The wait before retry number `retry` (0-based) in ms: `delayMs` · 2^retry, at most `maxDelayMs`. */
export function retryDelayMs(options: RetryOptions | undefined, retry: number): number {
  return Math.min(options?.maxDelayMs ?? 5000, (options?.delayMs ?? 200) * 2 ** retry);
}

/** A failure worth another try: a network error or an HTTP 5xx answer. */
class TransientError extends BundleError {}

const NETWORK =
  "check the network connection and that the server is up, then load again (verified files come from the cache)";

export function messageOf(err: unknown): string {
  return err instanceof Error || (typeof err === "object" && err !== null && "message" in err)
    ? String((err as Error).message)
    : String(err);
}

/** The error for a load stopped by `signal` while `file` was loading (nothing of it is used or cached). */
export function aborted(signal: AbortSignal, file?: string): LoadAbortedError {
  const reason = signal.reason === undefined ? "" : ` (${messageOf(signal.reason)})`;
  const what = file
    ? `${file}: loading aborted${reason}; the file was not cached`
    : `bundle load aborted${reason}`;
  return new LoadAbortedError(what, { file, cause: signal.reason });
}

/** Wait `ms`, or reject at once when `signal` aborts. */
function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * GET `url` into memory, refusing more than `limit` bytes (the manifest's size for listed files,
 * `exactSize`), so a hostile server cannot make the page allocate without bound. HTTP 5xx answers
 * and network errors are retried (`opts.retry`); the bytes of a failed try are taken back from
 * `onChunk`.
 */
export async function fetchBytes(
  url: string,
  what: string,
  limit: number,
  exactSize: boolean,
  opts: LoadOptions,
  onChunk?: (bytes: number) => void,
  alloc?: (bytes: number) => ArrayBuffer,
  onResponse?: (response: Response) => void,
): Promise<Uint8Array> {
  const retries = Math.max(0, Math.floor(opts.retry?.retries ?? 3));
  for (let attempt = 0; ; attempt++) {
    let got = 0;
    try {
      return await fetchOnce(
        url,
        what,
        limit,
        exactSize,
        opts,
        (n) => {
          got += n;
          onChunk?.(n);
        },
        alloc,
        onResponse,
      );
    } catch (err) {
      if (got) onChunk?.(-got);
      if (opts.signal?.aborted) throw aborted(opts.signal, what);
      if (!(err instanceof TransientError)) throw err;
      if (attempt >= retries) {
        if (attempt === 0) throw err;
        throw new BundleError(`${err.message}; gave up after ${attempt + 1} tries`, {
          file: err.file,
          hint: err.hint,
          cause: err.cause ?? err,
        });
      }
      try {
        await sleep(retryDelayMs(opts.retry, attempt), opts.signal);
      } catch {
        throw aborted(opts.signal!, what);
      }
    }
  }
}

async function fetchOnce(
  url: string,
  what: string,
  limit: number,
  exactSize: boolean,
  opts: LoadOptions,
  onChunk: (bytes: number) => void,
  alloc: (bytes: number) => ArrayBuffer = (n) => new ArrayBuffer(n),
  onResponse?: (response: Response) => void,
): Promise<Uint8Array> {
  const doFetch = opts.fetch ?? globalThis.fetch;
  let response: Response;
  try {
    response = await doFetch(url, { signal: opts.signal });
  } catch (err) {
    throw new TransientError(`${what}: could not fetch ${url} (${messageOf(err)})`, {
      file: what,
      hint: NETWORK,
      cause: err,
    });
  }
  if (!response.ok) {
    response.body?.cancel().catch(() => {});
    const transient = response.status >= 500;
    throw new (transient ? TransientError : BundleError)(
      `${what}: HTTP ${response.status} ${response.statusText} from ${url}`,
      {
        file: what,
        hint:
          response.status === 404
            ? "is the URL (and revision) right?"
            : transient
              ? "the server failed; try again later"
              : undefined,
      },
    );
  }
  onResponse?.(response);
  const tooLarge = () =>
    new BundleError(`${what}: larger than the ${limit} bytes expected`, {
      file: what,
      hint: DAMAGED,
    });
  const broken = (err: unknown, at: number) =>
    new TransientError(
      `${what}: the connection broke after ${at} bytes of ${url} (${messageOf(err)})`,
      { file: what, hint: NETWORK, cause: err },
    );
  const encoded = Boolean(response.headers.get("content-encoding"));
  const declared = Number(response.headers.get("content-length") ?? NaN);
  if (!encoded && declared > limit) throw tooLarge();
  if (!response.body) {
    let all: Uint8Array;
    try {
      all = new Uint8Array(await response.arrayBuffer());
    } catch (err) {
      throw broken(err, 0);
    }
    if (all.length > limit) throw tooLarge();
    onChunk(all.length);
    return all;
  }
  // Where the size is known up front (a listed file's manifest size; a Content-Length), read
  // straight into one buffer of that size (BYOB): one copy of every byte fewer than collecting
  // chunks and joining them. Streams that are not byte streams are read chunk by chunk.
  const expected = exactSize
    ? limit
    : !encoded && Number.isSafeInteger(declared)
      ? declared
      : undefined;
  let byob: ReadableStreamBYOBReader | undefined;
  if (expected !== undefined) {
    try {
      byob = response.body.getReader({ mode: "byob" });
    } catch {
      byob = undefined;
    }
  }
  if (byob) {
    let end = Math.min(expected!, limit) + 1; // the extra byte tells a longer body
    let buffer = alloc(end); // at least `end` bytes (may be a larger one, reused)
    let total = 0;
    for (;;) {
      let step: ReadableStreamReadResult<Uint8Array<ArrayBuffer>>;
      try {
        step = await byob.read(new Uint8Array(buffer, total, end - total));
      } catch (err) {
        throw broken(err, total);
      }
      if (!step.value) throw broken(new Error("the stream gave no buffer back"), total);
      buffer = step.value.buffer;
      if (step.done) break;
      total += step.value.byteLength;
      if (total > limit) {
        await byob.cancel().catch(() => {});
        throw tooLarge();
      }
      onChunk(step.value.byteLength);
      if (total === end) {
        // longer than its Content-Length said (and still within the limit): grow
        end = Math.min(limit + 1, end * 2);
        const grown = new Uint8Array(end);
        grown.set(new Uint8Array(buffer, 0, total));
        buffer = grown.buffer;
      }
    }
    return new Uint8Array(buffer, 0, total);
  }
  const chunks: Uint8Array[] = [];
  let total = 0;
  const reader = response.body.getReader();
  for (;;) {
    let step: ReadableStreamReadResult<Uint8Array>;
    try {
      step = await reader.read();
    } catch (err) {
      throw broken(err, total);
    }
    const { done, value } = step;
    if (done) break;
    total += value.length;
    if (total > limit) {
      await reader.cancel().catch(() => {});
      throw tooLarge();
    }
    chunks.push(value);
    onChunk(value.length);
  }
  if (chunks.length === 1) return chunks[0];
  const out = new Uint8Array(total);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

/** A verified manifest and where it came from: what a load starts from. */
export interface FetchedManifest {
  manifest: Manifest;
  manifestUrl: string;
  /** The URL that bundle paths are relative to (ends with "/"). */
  baseUrl: string;
  /** The Hub commit the manifest was read at (its URL's `resolve/<commit>/`, or the server's `X-Repo-Commit`), where known. */
  commit?: string;
}

/** Where a load starts: a manifest or bundle folder URL, or a manifest already fetched and verified. */
export type BundleSource = string | URL | FetchedManifest;

/** The verified manifest of `source`, fetched unless it is one already. */
export async function manifestOf(
  source: BundleSource,
  opts: LoadOptions = {},
): Promise<FetchedManifest> {
  return typeof source === "string" || source instanceof URL ? fetchManifest(source, opts) : source;
}

/**
 * Fetch and validate the manifest: checked against a pinned sha256 and the expected model when
 * given. `commit` is the Hub commit it was read at, from its URL or the `X-Repo-Commit` header.
 */
export async function fetchManifest(
  url: string | URL,
  opts: LoadOptions = {},
): Promise<FetchedManifest> {
  const { manifestUrl, baseUrl } = resolveBundleUrl(url);
  let commit = /\/resolve\/([0-9a-f]{40})\//.exec(manifestUrl)?.[1];
  const onResponse = (r: Response) => {
    const header = r.headers.get("x-repo-commit");
    if (!commit && header && /^[0-9a-f]{40}$/.test(header)) commit = header;
  };
  const bytes = await fetchBytes(
    manifestUrl,
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    false,
    opts,
    undefined,
    undefined,
    onResponse,
  );
  if (opts.manifestSha256 && (await sha256Hex(bytes)) !== opts.manifestSha256.toLowerCase()) {
    throw new BundleError(`${MANIFEST_NAME}: sha256 differs from the pinned one`, {
      file: MANIFEST_NAME,
      hint: "the revision moved or the manifest was tampered with; check the lock record",
    });
  }
  const manifest = parseManifest(bytes);
  const want = opts.expectModel;
  if (
    want &&
    (manifest.model.id !== want.id ||
      (want.version !== undefined && manifest.model.version !== want.version))
  ) {
    throw new BundleError(
      `${MANIFEST_NAME}: is ${manifest.model.id} ${manifest.model.version}, not ${want.id}${want.version === undefined ? "" : ` ${want.version}`}`,
      {
        file: MANIFEST_NAME,
        hint: "the repository does not hold what its tag says; check the version and the repository",
      },
    );
  }
  return { manifest, manifestUrl, baseUrl, commit };
}
