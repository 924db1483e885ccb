// The self-driving half the bench pages share (`index.html?auto`): the browser needs no automation
// driver, and no node where it runs. `drive` keeps the page's console lines, reads the run's
// config from /__config, runs it with a progress callback that posts each line to /__progress, and
// posts the result (or the fatal error, with the console) to /__result.

/** POST a string or bytes as they are, anything else as JSON. */
export const post = (path, body) =>
  fetch(path, { method: "POST", body: typeof body === "string" || body instanceof Uint8Array || body instanceof Uint8ClampedArray ? body : JSON.stringify(body) });

/**
 * Run `runAll(config, onLine)` for the server. `onFatal(err)` makes the result of a run that threw
 * (default `{fatal}`); `consoleLines` keeps the last that many console lines in the result.
 */
export async function drive(runAll, { onFatal = async (fatal) => ({ fatal }), consoleLines: keep = Infinity } = {}) {
  const lines = [];
  for (const level of ["log", "info", "warn", "error"]) {
    const original = console[level].bind(console);
    console[level] = (...args) => {
      lines.push(`${level}: ${args.map(String).join(" ")}`.slice(0, 300));
      original(...args);
    };
  }
  addEventListener("error", (e) => lines.push(`pageerror: ${e.message}`.slice(0, 300)));
  addEventListener("unhandledrejection", (e) => lines.push(`pageerror: ${e.reason}`.slice(0, 300)));
  let result;
  try {
    const config = await (await fetch("/__config")).json();
    result = await runAll(config, (line) => post("/__progress", line));
  } catch (err) {
    result = await onFatal(String(err && err.stack ? err.stack : err));
  }
  result.console = Number.isFinite(keep) ? lines.slice(-keep) : lines;
  await post("/__result", result);
}
