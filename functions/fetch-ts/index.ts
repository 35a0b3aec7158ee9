// POST {"url": "..."}: fetches it and answers {status, body}; a refused or
// failed fetch answers 502 with the error.
export default {
  async fetch(req: Request): Promise<Response> {
    const { url, method, body } = (await req.json()) as { url: string; method?: string; body?: string };
    try {
      const resp = await fetch(url, { method: method ?? (body ? "POST" : "GET"), body });
      return Response.json({ status: resp.status, body: await resp.text(), type: resp.headers.get("content-type") });
    } catch (e) {
      return Response.json({ error: String(e) }, { status: 502 });
    }
  },
};
