/**
 * The prompt tokenizer: the bundle's `tokenizer/tokenizer.json` run by @huggingface/tokenizers,
 * giving the ids Python `tokenizers` gives (formats/testdata/tokenizer_cases.json), then
 * truncated/padded to the text encoder's `[1, max_length]` exactly like
 * packer/runtime/generate.py `token_ids`.
 */
import { Tokenizer } from "@huggingface/tokenizers";

import { BundleError } from "./errors.js";
import { TEXT_MAX_LENGTH, type Manifest } from "./formats.js";

export interface PromptTokenizerOptions {
  maxLength?: number;
  padTokenId?: number;
}

/** Whether a tokenizers.json normalizer (or one of a Sequence's) lowercases. */
function lowercases(normalizer: unknown): boolean {
  if (typeof normalizer !== "object" || normalizer === null) return false;
  const n = normalizer as { type?: string; normalizers?: unknown[]; lowercase?: boolean };
  if (n.type === "Lowercase" || (n.type === "BertNormalizer" && n.lowercase)) return true;
  return n.type === "Sequence" && Array.isArray(n.normalizers) && n.normalizers.some(lowercases);
}

/**
 * Lowercase code point by code point, as Rust's `char::to_lowercase` does. JavaScript's
 * `toLowerCase` on a whole string applies the Final_Sigma rule (word-final "Σ" → "ς") that the
 * Rust library does not; lowering each code point alone first leaves no capital for it to act on.
 */
function lowerCodePoints(text: string): string {
  let out = "";
  for (const ch of text) out += ch.toLowerCase();
  return out;
}

export class PromptTokenizer {
  readonly maxLength: number;
  readonly padTokenId: number;
  private readonly tokenizer: Tokenizer;
  private readonly lower: boolean;

  constructor(
    tokenizerJson: string | Uint8Array | Record<string, unknown>,
    options: PromptTokenizerOptions = {},
  ) {
    let json: Record<string, unknown>;
    try {
      json =
        typeof tokenizerJson === "string"
          ? JSON.parse(tokenizerJson)
          : tokenizerJson instanceof Uint8Array
            ? JSON.parse(new TextDecoder().decode(tokenizerJson))
            : tokenizerJson;
    } catch (err) {
      throw new BundleError(`tokenizer.json: not valid JSON (${(err as Error).message})`, {
        file: "tokenizer.json",
        cause: err,
      });
    }
    this.tokenizer = new Tokenizer(json, {});
    this.lower = lowercases(json.normalizer);
    this.maxLength = options.maxLength ?? TEXT_MAX_LENGTH;
    this.padTokenId = options.padTokenId ?? 0;
  }

  /** The tokenizer a bundle names: its first tokenizer file, with max_length and pad id from the manifest. */
  static fromBundle(manifest: Manifest, files: Map<string, Uint8Array>): PromptTokenizer {
    const tok = manifest.tokenizer;
    const path = tok.files.find((f) => f.endsWith("tokenizer.json")) ?? tok.files[0];
    const bytes = files.get(path);
    if (!bytes) throw new BundleError(`${path}: not loaded`, { file: path });
    return new PromptTokenizer(bytes, {
      maxLength: tok.max_length,
      padTokenId: tok.pad_token_id ?? tok.eos_token_id ?? 0,
    });
  }

  /** The ids `tokenizers`' `encode(text).ids` gives (special tokens included, no padding). */
  encodeIds(text: string): number[] {
    return this.tokenizer.encode(this.lower ? lowerCodePoints(text) : text).ids;
  }

  /** `maxLength` int32 ids: truncated keeping the final end token, padded with the pad id. */
  encode(text: string): Int32Array {
    let ids = this.encodeIds(text);
    if (ids.length > this.maxLength)
      ids = [...ids.slice(0, this.maxLength - 1), ids[ids.length - 1]];
    const out = new Int32Array(this.maxLength).fill(this.padTokenId);
    out.set(ids);
    return out;
  }
}
