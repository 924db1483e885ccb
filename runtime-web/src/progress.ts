/**
 * Progress as a page shows it: one fraction over the whole load (0..1, never going back, even
 * when a broken download is retried and its bytes are taken back) and one human line, next to
 * the detailed fields of each event.
 */

/** Bytes as MiB with one decimal. */
export function mib(bytes: number): string {
  return (bytes / 2 ** 20).toFixed(1);
}

/** A fraction in [0, 1] that only grows: `next` returns the largest value seen so far. */
export class Monotone {
  private value = 0;

  next(fraction: number): number {
    if (Number.isFinite(fraction))
      this.value = Math.max(this.value, Math.min(1, Math.max(0, fraction)));
    return this.value;
  }
}

/** The line for a download: files and MiB done, and how many came from the cache. */
export function downloadText(
  p: { filesDone: number; filesTotal: number; loadedBytes: number; totalBytes: number },
  fromCache: number,
): string {
  const cached = fromCache ? `, ${fromCache} from the cache` : "";
  return `Loading files: ${p.filesDone}/${p.filesTotal}, ${mib(p.loadedBytes)} of ${mib(p.totalBytes)} MiB${cached}`;
}
