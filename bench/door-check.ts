/**
 * Issue 7, item 1: what refusing an undecodable `enc=msgpack` body at the forwarder costs.
 * Prints one JSON line per figure:
 *  - `door.check.ns`: the check alone (isValidValue), ns per body, for a typical small config
 *    value and a 10 KB value (a list of records, the costly shape: one header per field);
 *  - `door.writes`: writes sequenced per second end to end (one clonekv writer, pipelined),
 *    with the forwarder's `checkValues` on and off, per value size; rounds alternate and the
 *    median is reported, since other work on the machine moves single runs. `checkSharePct` is
 *    the check's time as a share of a write's time with the check off (ns per check × writes
 *    per second): the cost the check can have, which noise on a busy machine cannot blur.
 *
 * Topology: a Forwarder and a writer Peer in this process (the writer's cost is the same in both
 * modes, so the difference is the check).
 *
 * Run: `npx tsx bench/door-check.ts [--writes=20000] [--rounds=3]`
 */
import { Forwarder, Peer } from '../src/index.ts';
import { encodeValue, isValidValue } from '../src/protocol/values.ts';

const arg = (name: string, fallback: number): number => Number(new RegExp(`--${name}=(\\d+)`).exec(process.argv.join(' '))?.[1] ?? fallback);
const writes = arg('writes', 20_000);
const rounds = arg('rounds', 3);
const emit = (o: Record<string, unknown>): void => console.log(JSON.stringify({ bench: 'door-check', ...o }));

const values = {
  small: { host: 'db1.internal', port: 5432, pool: 20, tls: true, tags: ['primary', 'eu-west'] },
  '10KB': Array.from({ length: 215 }, (_, i) => ({ id: i, name: `service-${i}`, weight: i * 1.5, up: i % 2 === 0, zone: 'z1' })),
};

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

const checkNs: Record<string, number> = {};
for (const [size, value] of Object.entries(values)) {
  const body = encodeValue(value);
  const n = size === 'small' ? 2_000_000 : 50_000;
  let ok = true;
  for (let i = 0; i < n / 10; i++) ok &&= isValidValue(body); // warm up
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) ok &&= isValidValue(body);
  const ns = Number(process.hrtime.bigint() - t0) / n;
  if (!ok) throw new Error('a valid body was refused');
  checkNs[size] = ns;
  emit({ figure: 'door.check.ns', value: size, bytes: body.length, nsPerBody: Math.round(ns) });
}

/** A forwarder with `checkValues` on or off and one writer, kept for every round. */
async function setup(checkValues: boolean) {
  const fwd = await Forwarder.start({ port: 0, checkValues });
  const peer = new Peer({ server: fwd.endpoint, presence: false, subtree: 'none/' });
  await peer.ready();
  return {
    /** Writes per second for `writes` pipelined writes of `value`. */
    async rate(value: unknown): Promise<number> {
      const t0 = performance.now();
      const chunk = 1000;
      for (let i = 0; i < writes; i += chunk) {
        const batch: Promise<unknown>[] = [];
        for (let j = i; j < i + chunk; j++) batch.push(peer.set(`k/${j % 1000}`, value));
        await Promise.all(batch);
      }
      return writes / ((performance.now() - t0) / 1000);
    },
    async close(): Promise<void> {
      await peer.close();
      await fwd.close();
    },
  };
}

const off = await setup(false);
const on = await setup(true);
for (const [size, value] of Object.entries(values)) {
  await off.rate(value); // warm up both
  await on.rate(value);
  const rateOn: number[] = [];
  const rateOff: number[] = [];
  for (let r = 0; r < rounds; r++) {
    rateOff.push(await off.rate(value));
    rateOn.push(await on.rate(value));
  }
  const a = median(rateOff);
  const b = median(rateOn);
  emit({ figure: 'door.writes', value: size, bytes: encodeValue(value).length, writes, rounds, checkOff: Math.round(a), checkOn: Math.round(b), changePct: Math.round(((b - a) / a) * 1000) / 10, checkSharePct: Math.round(((checkNs[size]! * a) / 1e9) * 1000) / 10 });
}
await off.close();
await on.close();
