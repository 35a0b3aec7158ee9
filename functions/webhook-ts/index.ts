// POST with header `x-signature: sha256=<hex HMAC-SHA256 of the body>`.
// 401 unless the signature matches WEBHOOK_SECRET; then echoes the event.
const encoder = new TextEncoder();

function hex(bytes: ArrayBuffer): string {
  return [...new Uint8Array(bytes)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

function unhex(text: string): Uint8Array<ArrayBuffer> | null {
  if (!/^([0-9a-f]{2})*$/i.test(text)) return null;
  return new Uint8Array(text.match(/../g)?.map((h) => parseInt(h, 16)) ?? []);
}

export default {
  async fetch(req: Request, env: Record<string, string | undefined>): Promise<Response> {
    const secret = env.WEBHOOK_SECRET;
    if (!secret) return Response.json({ error: "WEBHOOK_SECRET is not set" }, { status: 500 });
    const body = await req.text();
    const given = unhex((req.headers.get("x-signature") ?? "").replace(/^sha256=/, ""));
    const key = await crypto.subtle.importKey("raw", encoder.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, ["sign", "verify"]);
    if (!given || !(await crypto.subtle.verify("HMAC", key, given, encoder.encode(body)))) {
      return Response.json({ error: "bad signature" }, { status: 401 });
    }
    const expected = hex(await crypto.subtle.sign("HMAC", key, encoder.encode(body)));
    return Response.json({ ok: true, event: JSON.parse(body), signature: expected });
  },
};
