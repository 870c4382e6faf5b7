/**
 * Issue 3 figures: a peer frozen with SIGSTOP while one writer sends as fast as it can.
 * Prints one JSON line per figure:
 *  - `stall.forwarder.rss.peak`: the forwarder's peak RSS (MiB) during the 10 s run, and its
 *    baseline, with one stalled peer;
 *  - `stall.writer.rate`: writes sequenced per second meanwhile (the stalled peer must not slow it);
 *  - `stall.recovery`: ms from SIGCONT until the stalled peer holds exactly the forwarder's map.
 *
 * Topology: forwarder child process (bench/compare/forwarder-child.ts), stalled peer child
 * (test/fixtures/peer-child.ts), writer and reference follower Peers in this process.
 *
 * Run: `npx tsx bench/stall.ts [--seconds=10]`
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { Peer } from '../src/index.ts';
import { mapDigest } from '../test/helpers.ts';

const seconds = Number(/--seconds=(\d+)/.exec(process.argv.join(' '))?.[1] ?? 10);
const here = (p: string): string => fileURLToPath(new URL(p, import.meta.url));
const emit = (o: Record<string, unknown>): void => console.log(JSON.stringify({ bench: 'stall', ...o }));

function child(script: string, args: string[]) {
  const c = spawn(process.execPath, ['--import', 'tsx', script, ...args], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines: Array<Record<string, unknown>> = [];
  createInterface({ input: c.stdout! }).on('line', (l) => lines.push(JSON.parse(l) as Record<string, unknown>));
  const next = async <T>(pick: (o: Record<string, unknown>) => T | undefined, ms = 30_000): Promise<T> => {
    const until = Date.now() + ms;
    for (;;) {
      for (let i = 0; i < lines.length; i++) {
        const v = pick(lines[i]!);
        if (v !== undefined) {
          lines.splice(i, 1);
          return v;
        }
      }
      if (Date.now() > until) throw new Error(`no reply from ${script}`);
      await new Promise((r) => setTimeout(r, 5));
    }
  };
  return { c, next };
}

const rssMiB = (pid: number): number => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) / 1024;

const fwd = child(here('./compare/forwarder-child.ts'), []);
const endpoint = await fwd.next((o) => o.endpoint as string | undefined);
const stalled = child(here('../test/fixtures/peer-child.ts'), [endpoint, JSON.stringify({ name: 'stalled' })]);
await stalled.next((o) => (o.ready ? true : undefined));
const writer = new Peer({ server: endpoint, name: 'writer', subtree: 'none/', writeTimeout: 60_000 });
const follower = new Peer({ server: endpoint, name: 'follower' });
await Promise.all([writer.ready(), follower.ready()]);
const pid = fwd.c.pid!;
const baseline = rssMiB(pid);
stalled.c.kill('SIGSTOP');
let peak = baseline;
const sampler = setInterval(() => (peak = Math.max(peak, rssMiB(pid))), 50);
const value = 'x'.repeat(100);
const until = Date.now() + seconds * 1000;
let writes = 0;
let inflight = 0;
await new Promise<void>((resolve) => {
  const pump = (): void => {
    while (inflight < 1024 && Date.now() < until) {
      inflight++;
      void writer.set(`k/${writes % 10_000}`, `${writes++}:${value}`).then(() => {
        inflight--;
        if (Date.now() < until) pump();
        else if (inflight === 0) resolve();
      });
    }
  };
  pump();
});
const last = await writer.set('k/final', writes);
clearInterval(sampler);
emit({ figure: 'stall.writer.rate', value: Math.round(writes / seconds), unit: 'writes/s', seconds });
emit({ figure: 'stall.forwarder.rss.peak', value: Math.round(peak), baseline: Math.round(baseline), unit: 'MiB', stalledPeers: 1 });
while (follower.sequence < last) await new Promise((r) => setTimeout(r, 5));
const truth = mapDigest(follower);
const resumed = performance.now();
stalled.c.kill('SIGCONT');
for (;;) {
  stalled.c.stdin!.write('state\n');
  const s = await stalled.next((o) => o.state as { digest: string; status: string; stats: { resyncs: number; gaps: number } } | undefined);
  if (s.digest === truth && s.status === 'live') {
    emit({ figure: 'stall.recovery', value: Math.round(performance.now() - resumed), unit: 'ms', resyncs: s.stats.resyncs, gaps: s.stats.gaps });
    break;
  }
  await new Promise((r) => setTimeout(r, 20));
}
await Promise.all([writer.close(), follower.close()]);
stalled.c.kill('SIGKILL');
fwd.c.stdin!.end();
