/** Model specs: the forms accepted, the error for anything else, and revision lookups on a Hub-shaped server. */
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { BundleError } from "../src/errors.js";
import { commitInUrl, parseModelSpec, resolveModel, resolveRevision } from "../src/modelSpec.js";
import { serveHub, TESTDATA } from "./helpers.js";

const COMMIT = "0123456789abcdef0123456789abcdef01234567";

describe("parseModelSpec", () => {
  test("Hub pins, URLs and lock records", () => {
    assert.deepEqual(parseModelSpec("sdpack/tiny-sd@1.2.0"), {
      kind: "hub",
      repo: "sdpack/tiny-sd",
      version: "1.2.0",
    });
    assert.deepEqual(parseModelSpec("sdpack/tiny-sd@v1.2.0-rc.1"), {
      kind: "hub",
      repo: "sdpack/tiny-sd",
      version: "1.2.0-rc.1",
    });
    assert.deepEqual(parseModelSpec(`Org.x/Name_2@${COMMIT}`), {
      kind: "hub",
      repo: "Org.x/Name_2",
      commit: COMMIT,
    });
    for (const url of [
      "https://huggingface.co/o/n/resolve/main/manifest.json",
      "http://127.0.0.1:8000/o/n/",
      "/models/x/",
      "./bundle/manifest.json",
      "../b/",
    ]) {
      assert.deepEqual(parseModelSpec(url), { kind: "url", url });
    }
    const u = new URL("https://example.com/m/");
    assert.deepEqual(parseModelSpec(u), { kind: "url", url: u });
    const lock = {
      lock_version: 1 as const,
      repo: "o/n",
      version: "1.0.0",
      commit: COMMIT,
      manifest_sha256: "f".repeat(64),
      endpoint: "https://huggingface.co",
    };
    assert.deepEqual(parseModelSpec(lock), { kind: "lock", lock });
  });

  test("anything else: one error naming the spec, why, and the accepted forms", () => {
    const cases: [string, RegExp][] = [
      ["sdpack/tiny-sd", /it does not say which version/],
      [
        "sdpack/tiny-sd@latest",
        /"latest" is neither a version \(1\.2\.0 or v1\.2\.0\) nor a 40-hex commit sha/,
      ],
      ["sdpack/tiny-sd@1.2", /"1\.2" is neither a version/],
      ["sdpack/tiny-sd@", /"" is neither a version/],
      ["tiny-sd@1.0.0", /"tiny-sd" is not a repository id/],
      ["a/b/c@1.0.0", /"a\/b\/c" is not a repository id/],
      ["sd--pack/x@1.0.0", /is not a repository id/],
      ["bundle/manifest.json/x", /is not a repository id/],
      ["", /"" is not a repository id/],
    ];
    for (const [spec, why] of cases) {
      assert.throws(
        () => parseModelSpec(spec),
        (err: BundleError) => {
          assert.ok(err instanceof BundleError);
          assert.ok(err.message.startsWith(`model ${JSON.stringify(spec)}: `), err.message);
          assert.match(err.message, why);
          assert.match(
            err.message,
            /accepted: ORG\/NAME@VERSION, ORG\/NAME@<40-hex commit>, a manifest URL or a lock record$/,
          );
          assert.match(err.hint!, /sdpack\/tiny-sd@1\.0\.0/);
          return true;
        },
      );
    }
    assert.throws(
      () => parseModelSpec({ lock_version: 2 } as never),
      /lock record: unknown lock_version/,
    );
  });

  test("commitInUrl reads resolve/<commit>/ only", () => {
    assert.equal(commitInUrl(`https://h/o/n/resolve/${COMMIT}/manifest.json`), COMMIT);
    assert.equal(commitInUrl("https://h/o/n/resolve/v1.0.0/manifest.json"), undefined);
  });
});

describe("resolveRevision / resolveModel", () => {
  test("a version is looked up as tag vVERSION; commits and URLs need no lookup", async () => {
    const hub = await serveHub(`${TESTDATA}bundle`, "sdpack/golden", { "v1.0.0": COMMIT });
    try {
      assert.equal(await resolveRevision("sdpack/golden", "v1.0.0", { endpoint: hub.url }), COMMIT);
      const r = await resolveModel("sdpack/golden@1.0.0", { endpoint: hub.url });
      assert.deepEqual(r, {
        manifestUrl: `${hub.url}/sdpack/golden/resolve/${COMMIT}/manifest.json`,
        repo: "sdpack/golden",
        version: "1.0.0",
        commit: COMMIT,
      });
      assert.deepEqual(hub.requests, [
        "/api/models/sdpack/golden/revision/v1.0.0",
        "/api/models/sdpack/golden/revision/v1.0.0",
      ]);
      const byCommit = await resolveModel(`sdpack/golden@${COMMIT}`);
      assert.equal(
        byCommit.manifestUrl,
        `https://huggingface.co/sdpack/golden/resolve/${COMMIT}/manifest.json`,
      ); // the default endpoint
      assert.equal(hub.requests.length, 2);
      assert.deepEqual(await resolveModel("https://x.org/m/"), {
        manifestUrl: "https://x.org/m/manifest.json",
        commit: undefined,
      });
    } finally {
      await hub.close();
    }
  });

  test("an answer without a commit sha, or no server at all, is a clear error", async () => {
    const answer = (body: string) => async () => new Response(body, { status: 200 });
    await assert.rejects(
      resolveRevision("o/n", "v1.0.0", { fetch: answer('{"sha":"main"}') }),
      /o\/n@v1\.0\.0: https:\/\/huggingface\.co\/api\/models\/o\/n\/revision\/v1\.0\.0 answered without a commit sha/,
    );
    await assert.rejects(
      resolveRevision("o/n", "v1.0.0", { fetch: answer("<html>") }),
      /answered without a commit sha/,
    );
    await assert.rejects(
      resolveRevision("o/n", "v1.0.0", { endpoint: "http://127.0.0.1:9" }),
      (err: BundleError) => {
        assert.match(
          err.message,
          /^o\/n@v1\.0\.0: could not ask http:\/\/127\.0\.0\.1:9 for the commit/,
        );
        assert.match(err.hint!, /network/);
        return true;
      },
    );
    const unauthorized = async () => new Response("", { status: 401 });
    await assert.rejects(
      resolveRevision("o/n", "v1.0.0", { fetch: unauthorized }),
      /repository o\/n not found on https:\/\/huggingface\.co \(or it is private\)/,
    );
  });
});
