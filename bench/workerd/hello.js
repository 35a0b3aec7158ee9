// The Worker equivalent of functions/hello-ts, workerd's side of
// bench/functions-js.sh: reads the posted JSON and answers
// {"message", "received": <posted JSON>, "user": null} (no auth in workerd;
// the benchmark calls hello-ts with only the publishable key, so its `user`
// is null too).
export default {
  async fetch(req) {
    const text = await req.text();
    let received = null;
    if (text) {
      try {
        received = JSON.parse(text);
      } catch (e) {
        return Response.json({ error: `invalid JSON: ${e.message}` }, { status: 400 });
      }
    }
    return Response.json({ message: "Hello from Wasmbase!", received, user: null });
  },
};
