/** Small helpers shared by the examples: a visible check and a bounded wait. */

/** Throws (failing the example) unless `ok`; prints the check when it holds. */
export function check(ok: boolean, what: string): asserts ok {
  if (!ok) throw new Error(`check failed: ${what}`);
  console.log(`  ok: ${what}`);
}

/** Polls `done` on the event loop until it holds, failing after `ms`. */
export async function until(what: string, done: () => boolean, ms = 5_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}
