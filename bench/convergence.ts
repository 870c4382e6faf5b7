/**
 * The long form of the convergence test (test/convergence.test.ts): more peers, a longer run,
 * more bursts. Never part of `npm test`. Prints one JSON line per run, `{"bench":"convergence",
 * "seed":…,"ok":…,"figures":{…},"failures":[…]}`, the timeline of chaos actions on stderr, and
 * exits 1 if any run failed.
 *
 * Run: `npx tsx bench/convergence.ts [--seed N] [--seconds S] [--runs K] [--short]`
 *  - `--seed N`: the first seed (default `CONVERGENCE_SEED`, else random); run i uses N + i;
 *  - `--seconds S`: how long writes and chaos go on in each run (default 60);
 *  - `--runs K`: how many runs (default 1);
 *  - `--short`: the CI form's peers and rates (to replay a seed the test printed);
 *  - `--direct`: no peer goes through the proxies (no cuts reach anyone);
 *  - `--write-timeout MS`: every peer's writeTimeout.
 * The last two make a control run for triage: on the code this was written against (main at
 * bc2845a), `--short --direct --write-timeout 20000` passed seeds 500-503, which rules out
 * the harness for the failures the test lists (items 2, 7 and 15 of issue 7).
 */
import { parseArgs } from 'node:util';
import { SHORT_FORM, SHORT_PEERS, runConvergence, seedFromEnv, type PeerSpec } from '../test/fixtures/convergence-run.ts';

const { values } = parseArgs({
  options: {
    seed: { type: 'string' },
    seconds: { type: 'string' },
    runs: { type: 'string', default: '1' },
    short: { type: 'boolean', default: false },
    direct: { type: 'boolean', default: false },
    'write-timeout': { type: 'string' },
  },
});
const int = (name: string, s: string | undefined, fallback: number): number => {
  if (s === undefined) return fallback;
  const n = Number(s);
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`--${name} must be a non-negative integer, got ${s}`);
  return n;
};

/** The long form: the CI peers plus a second of each kind, on the other side of the proxies. */
const LONG_PEERS: PeerSpec[] = [
  ...SHORT_PEERS,
  { name: 'full-proxied', subtree: '', watches: ['', 'd/'], proxied: true, killable: true, writer: true, options: { subscriberHwm: { receive: 100 } } },
  { name: 'c-direct', subtree: 'c/', watches: ['c/'], proxied: false, killable: true, writer: true },
  { name: 'ab-proxied', subtree: 'a/b/', watches: ['a/b/'], proxied: true, killable: true, writer: true, options: { writeTimeout: 1000 } },
  { name: 'd', subtree: 'd/', watches: ['d/'], proxied: false, killable: false, writer: true },
];

const writeTimeout = values['write-timeout'] === undefined ? undefined : int('write-timeout', values['write-timeout'], 0);
/** The peers, changed as the triage flags say. */
const adjust = (peers: PeerSpec[]): PeerSpec[] =>
  peers.map((p) => ({
    ...p,
    proxied: p.proxied && !values.direct,
    options: { ...p.options, ...(writeTimeout === undefined ? {} : { writeTimeout }) },
  }));
const first = int('seed', values.seed, seedFromEnv());
const runs = int('runs', values.runs, 1);
let failed = 0;
for (let i = 0; i < runs; i++) {
  const seed = first + i;
  const r = await runConvergence(
    values.short
      ? { ...SHORT_FORM, seed, seconds: int('seconds', values.seconds, SHORT_FORM.seconds), peers: adjust(SHORT_PEERS) }
      : {
          seed,
          seconds: int('seconds', values.seconds, 60),
          batchesPerSecond: 50,
          burst: 3000,
          bursts: 3,
          peers: adjust(LONG_PEERS),
          settleMs: 20_000,
          log: (line) => process.stderr.write(`[seed ${seed}] ${line}\n`),
        },
  );
  if (r.failures.length > 0) failed++;
  console.log(JSON.stringify({ bench: 'convergence', seed, ok: r.failures.length === 0, figures: r.figures, failures: r.failures }));
  if (r.failures.length > 0 && values.short) process.stderr.write(`timeline of seed ${seed}:\n  ${r.timeline.join('\n  ')}\n`);
}
if (failed > 0) {
  process.stderr.write(`${failed} of ${runs} run(s) failed; rerun one with: npx tsx bench/convergence.ts --seed SEED${values.short ? ' --short' : ''}\n`);
  process.exitCode = 1;
}
