/** SHA-256 through WebCrypto (`globalThis.crypto.subtle`: browsers, Deno, node >= 20). */
export async function sha256Hex(bytes: Uint8Array): Promise<string> {
  const subtle = globalThis.crypto?.subtle;
  if (!subtle)
    throw new Error(
      "WebCrypto (crypto.subtle) is not available: use a secure context (https or localhost)",
    );
  const digest = new Uint8Array(await subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>));
  let hex = "";
  for (const b of digest) hex += b.toString(16).padStart(2, "0");
  return hex;
}
