import { ClientHelloReader, parseClientHello } from "./client_hello.ts";

const hello = Deno.readFileSync(new URL("./testdata/curl_tls13.bin", import.meta.url));

Deno.bench("parseClientHello() whole curl hello (517 bytes)", { baseline: true }, () => {
  parseClientHello(hello);
});

Deno.bench("ClientHelloReader.push() curl hello in 4 chunks", () => {
  const reader = new ClientHelloReader();
  for (let off = 0; off < hello.length; off += 130) reader.push(hello.subarray(off, off + 130));
});

Deno.bench("ClientHelloReader.push() curl hello 1 byte at a time", () => {
  const reader = new ClientHelloReader();
  for (let i = 0; i < hello.length; i++) reader.push(hello.subarray(i, i + 1));
});
