import assert from "node:assert/strict";
import { decodeToken, TOKEN_BYTES, tokenText } from "./token.ts";

Deno.test("tokenText() and decodeToken() are standard base64 of exactly TOKEN_BYTES", () => {
  const raw = Uint8Array.from({ length: TOKEN_BYTES }, (_, i) => (i * 37 + 251) & 0xff);
  const text = tokenText(raw);
  assert.equal(text, btoa(String.fromCharCode(...raw)));
  assert.deepEqual(decodeToken(text), raw);
  assert.equal(decodeToken(text.slice(4)), null); // 29 bytes
  assert.equal(decodeToken(tokenText(new Uint8Array(33))), null);
  assert.equal(decodeToken(text.replace(/.$/, "!")), null); // not base64
  assert.equal(decodeToken(text.replaceAll("+", "-").replaceAll("/", "_") + "-_"), null); // url alphabet
  assert.equal(decodeToken(42), null);
  assert.equal(decodeToken(undefined), null);
});
