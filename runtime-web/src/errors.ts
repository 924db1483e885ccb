/**
 * The one error type of the runtime: a message that names the file at fault and a hint that
 * says what the user can do. Callers catch `BundleError` and show `message` and `hint`.
 */
export class BundleError extends Error {
  /** What the user can do about it, when there is something. */
  readonly hint?: string;
  /** The bundle-relative path (or URL) the error is about, when it is about one file. */
  readonly file?: string;

  constructor(message: string, options: { hint?: string; file?: string; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "BundleError";
    this.hint = options.hint;
    this.file = options.file;
  }
}

/**
 * A load stopped by the caller's `AbortSignal`. Its `name` is "AbortError" (as for an aborted
 * `fetch`), so `err.name === "AbortError"` tells a stop from a failure; `file` names the file
 * being fetched when it stopped, and `cause` is the signal's reason. Nothing of that file was used
 * or cached.
 */
export class LoadAbortedError extends BundleError {
  constructor(message: string, options: { file?: string; cause?: unknown } = {}) {
    super(message, options);
    this.name = "AbortError";
  }
}

/** The hint for any file that fails its checks. */
export const DAMAGED = "the bundle is damaged or was tampered with; pull or pack it again";

/** A scheduler config or name this runtime cannot run. */
export class UnsupportedError extends BundleError {
  constructor(message: string, hint?: string) {
    super(message, { hint });
    this.name = "UnsupportedError";
  }
}
