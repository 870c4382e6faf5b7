/**
 * `npm run bench`: clonekv's own figures, one JSON line each, never part of `npm test`.
 *
 * 1. Through the comparison harness, clonekv beside raw zeromq.js PUB→SUB (5 frames, as CHP
 *    messages are) measured in the same run: sustained updates/s from one writer through the
 *    forwarder to one and to 16 peers, p50/p99/p999 write-to-visible latency at fixed rates
 *    (1k, 10k, 50k/s), and late joins of 100,000 and 1,000,000 keys (time to a complete,
 *    verified map, and the joiner's peak RSS). Each line carries `ratioClonekv` where it applies.
 * 2. bench/stall.ts: a peer frozen with SIGSTOP under a full-speed writer: the forwarder's peak
 *    RSS and the frozen peer's recovery time after SIGCONT.
 * 3. bench/failover.ts: a primary/backup pair: failover time after SIGKILL of the active (median
 *    and worst of several kills, to the first read and to the first acknowledged write), and the
 *    cost of replicated acknowledgements against one durable forwarder (throughput, p99 at 10k/s).
 *
 * Options: `--quick` (short runs, the 100k join only). Takes about 3.5 minutes (1 minute quick).
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const quick = process.argv.includes('--quick');
const here = (p: string): string => fileURLToPath(new URL(p, import.meta.url));

function run(script: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', here(script), ...args], { stdio: ['ignore', 'inherit', 'inherit'] });
    child.once('error', reject);
    child.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`${script} exited with ${code}`))));
  });
}

await run('./compare.ts', ['--only=clonekv,zmq-5f', '--runs=1', '--no-report', ...(quick ? ['--quick'] : [])]);
await run('./stall.ts', [`--seconds=${quick ? 3 : 10}`]);
await run('./failover.ts', quick ? ['--quick'] : []);
