/** Shared test helpers: the golden vectors in formats/testdata and a loopback file server. */
import assert from "node:assert/strict";
import { cpSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join, normalize, sep } from "node:path";
import { fileURLToPath } from "node:url";

import { BundleError } from "../src/errors.js";

/** formats/testdata (tests run from dist-test/test/). */
export const TESTDATA = fileURLToPath(new URL("../../../formats/testdata/", import.meta.url));

export function readJson<T = any>(name: string): T {
  return JSON.parse(readFileSync(join(TESTDATA, name), "utf8")) as T;
}

/** A fresh copy of the golden bundle that a test may tamper with. */
export function bundleCopy(): { dir: string; remove: () => void } {
  const dir = mkdtempSync(join(tmpdir(), "sdpack-bundle-"));
  cpSync(join(TESTDATA, "bundle"), dir, { recursive: true });
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

export interface FileServer {
  url: string;
  /** Paths requested so far, in order. */
  requests: string[];
  close: () => Promise<void>;
}

/** Serve `root` on 127.0.0.1 (GET only, no listing), recording each request path. */
export async function serve(root: string, prefix = "/"): Promise<FileServer> {
  const requests: string[] = [];
  const server: Server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url ?? "/", "http://x").pathname);
    requests.push(path);
    const file = normalize(join(root, path.slice(prefix.length)));
    if (req.method !== "GET" || !path.startsWith(prefix) || !file.startsWith(root + sep)) {
      res.writeHead(404).end();
      return;
    }
    try {
      const body = readFileSync(file);
      res
        .writeHead(200, {
          "content-type": "application/octet-stream",
          "content-length": body.length,
        })
        .end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}${prefix}`,
    requests,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

/** Float32 bits of a value, for ulp distances. */
export function f32bits(v: number): number {
  const b = new DataView(new ArrayBuffer(4));
  b.setFloat32(0, v, true);
  return b.getInt32(0, true);
}

/** The error a promise rejects with (which must be a BundleError). */
export async function bundleError(p: Promise<unknown>): Promise<BundleError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof BundleError, `expected a BundleError, got ${err}`);
    return err;
  }
  assert.fail("expected the load to fail");
}

/**
 * A Hub-shaped server for one repository whose every revision holds the files of `root`:
 * `GET /api/models/{repo}/revision/{rev}` → `{ id, sha }` (404 with `X-Error-Code` for an unknown
 * repository or revision) and `GET /{repo}/resolve/{rev}/{path}`, as the Hub and `packer serve`
 * answer them.
 */
export async function serveHub(
  root: string,
  repo: string,
  refs: Record<string, string>,
): Promise<FileServer> {
  const requests: string[] = [];
  const commitOf = (rev: string) =>
    refs[rev] ?? (Object.values(refs).includes(rev) ? rev : undefined);
  const server: Server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url ?? "/", "http://x").pathname);
    requests.push(path);
    const api = /^\/api\/models\/([^/]+\/[^/]+)\/revision\/([^/]+)$/.exec(path);
    const resolve = /^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(path);
    const match = api ?? resolve;
    if (!match) return void res.writeHead(404, { "x-error-code": "EntryNotFound" }).end();
    if (match[1] !== repo)
      return void res
        .writeHead(404, { "x-error-code": "RepoNotFound" })
        .end('{"error":"Repository not found"}');
    const commit = commitOf(match[2]);
    if (!commit)
      return void res
        .writeHead(404, { "x-error-code": "RevisionNotFound" })
        .end('{"error":"Invalid rev id"}');
    if (api)
      return void res
        .writeHead(200, { "content-type": "application/json" })
        .end(JSON.stringify({ id: repo, sha: commit, siblings: [] }));
    const file = normalize(join(root, resolve![3]));
    try {
      if (!file.startsWith(root + sep)) throw new Error("outside");
      const body = readFileSync(file);
      res.writeHead(200, { "content-length": body.length, "x-repo-commit": commit }).end(body);
    } catch {
      res.writeHead(404, { "x-error-code": "EntryNotFound" }).end();
    }
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}
