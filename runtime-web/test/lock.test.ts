/** lock.ts: lock records checked field by field, then against manifests/lock.schema.json. */
import assert from "node:assert/strict";
import { test } from "node:test";

import type { LockRecord } from "../src/formats.js";
import { lockManifest } from "../src/lock.js";

const lock: LockRecord = {
  lock_version: 1,
  repo: "sdpack/golden",
  version: "1.0.0",
  commit: "a".repeat(40),
  manifest_sha256: "b".repeat(64),
  endpoint: "http://127.0.0.1:8000",
};

test("a lock record gives its commit's manifest URL and the pinned sha256", () => {
  assert.deepEqual(lockManifest(lock), {
    url: `http://127.0.0.1:8000/sdpack/golden/resolve/${"a".repeat(40)}/manifest.json`,
    manifestSha256: "b".repeat(64),
  });
});

test("what the schema says beyond the field checks is enforced too, naming the field", () => {
  const bad = (record: object) => () => lockManifest(record as LockRecord);
  assert.throws(
    bad({ ...lock, repo: "sdpack/gol--den" }),
    /lock record: not a valid lock record \(repo: /,
  );
  assert.throws(
    bad({ ...lock, version: "latest" }),
    /lock record: not a valid lock record \(version: /,
  );
  assert.throws(
    bad({ ...lock, extra: true }),
    /lock record: not a valid lock record \(\(root\): must NOT have additional properties\)/,
  );
  assert.throws(bad({ ...lock, endpoint: "/srv/hub" }), /endpoint must be an http\(s\) URL/);
});
