// The `ticker` example in TypeScript: a cron handler and an HTTP entry point.
import { sql, log } from "wasmbase";

interface ScheduledEvent {
  name: string;
  scheduledAt: string;
  runId: string;
  attempt: number;
  payload: unknown;
}

export async function scheduled(event: ScheduledEvent): Promise<void> {
  await sql.execute(
    "INSERT INTO public.ticker_runs (run_id, attempt, name, payload) VALUES ($1::uuid, $2, $3, $4)",
    [event.runId, event.attempt, event.name, event.payload],
  );
  log.info(`tick ${event.name} for ${event.scheduledAt}`);
}

export default {
  async fetch(): Promise<Response> {
    const [{ n }] = await sql.query("SELECT count(*)::int AS n FROM public.ticker_runs");
    return Response.json({ runs: n });
  },
  scheduled,
};
