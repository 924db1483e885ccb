/**
 * The decode worker (a module Web Worker that decodePool.ts starts): verifies and decodes the
 * stored files it is sent, exactly as `decodeVerified` does on the page's thread, and sends the
 * result back. Buffers travel both ways by transfer, never by copy: the stored bytes come in and
 * go back (the loader caches them once the checks passed), the decoded bytes go out. Requests are
 * handled concurrently: while one file's sha256 runs (WebCrypto, off this thread), the next one's
 * zstd can.
 *
 * Bundlers: the loader starts it as `new Worker(new URL("./decodeWorker.js", import.meta.url),
 * { type: "module" })`, which webpack 5 and Vite follow; with esbuild, build the package's export
 * `@sdpack/runtime-web/decodeWorker.js` as one more entry point into the bundle's folder (the
 * README's esbuild line), or pass `LoadOptions.workerUrl`.
 */
import {
  handleDecodeRequest,
  SpareBuffers,
  WORKER_READY,
  type DecodeRequest,
  type DecodeResponse,
} from "./decodeProtocol.js";
import { decodeVerified } from "./encoding.js";

interface WorkerScope {
  onmessage: ((event: MessageEvent<DecodeRequest>) => void) | null;
  postMessage(message: DecodeResponse | typeof WORKER_READY, transfer?: Transferable[]): void;
}

const scope = globalThis as unknown as WorkerScope;

// Decoded buffers the page gave back: the next files are unshuffled into them (no fresh pages to fault in).
const spare = new SpareBuffers(3);

scope.onmessage = (event) => {
  void handleDecodeRequest(event.data, decodeVerified, spare).then(({ response, transfer }) =>
    scope.postMessage(response, transfer),
  );
};
scope.postMessage(WORKER_READY);
