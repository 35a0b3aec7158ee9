// GET: the caller's todos. POST {"task": "..."}: adds one for the caller.
// db = "caller": RLS applies, and anon stays anon (sees nothing).
import { db } from "wasmbase";

interface Todo {
  id: number;
  task: string;
  done: boolean;
}

export default {
  async fetch(req: Request): Promise<Response> {
    if (req.method === "POST") {
      const { task } = (await req.json()) as { task: string };
      const { data, error } = await db.from("todos").insert({ task }).select("id,task,done").single();
      if (error) return Response.json(error, { status: error.status });
      return Response.json(data as Todo, { status: 201 });
    }
    const { data, error } = await db.from("todos").select("id,task,done").order("id");
    if (error) return Response.json(error, { status: error.status });
    return Response.json(data as Todo[]);
  },
};
