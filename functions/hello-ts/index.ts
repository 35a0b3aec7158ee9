// Responds {"message", "received": <posted JSON>, "user": <sub or null>},
// like the Rust `hello`.
import { auth, log } from "wasmbase";

interface Reply {
  message: string;
  received: unknown;
  user: string | null;
}

export default {
  async fetch(req: Request): Promise<Response> {
    const text = await req.text();
    let received: unknown = null;
    if (text) {
      try {
        received = JSON.parse(text);
      } catch (e) {
        return Response.json({ error: `invalid JSON: ${(e as Error).message}` }, { status: 400 });
      }
    }
    const user = auth.user();
    log.info(`hello from ${user?.role ?? "anon"}`);
    const reply: Reply = { message: "Hello from Wasmbase!", received, user: user?.id ?? null };
    return Response.json(reply);
  },
};
