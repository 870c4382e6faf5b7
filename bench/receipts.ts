/**
 * Signed receipts (issue 10): round-trip latency of `set(…, { confirmBy })` from 1 and from 10
 * recipients, one JSON line per figure, beside the same signed write without receipts.
 *
 * A forwarder in its own process (bench/compare/forwarder-child.ts) with a policy file, so it
 * verifies every write and every receipt. In this process: a writer (identity and policy) and
 * the recipients (each with its identity and the policy, so each verifies the write, then signs
 * and writes its receipt). Writes are sequential: each latency is from the call to its
 * resolution. Note that the recipients, the writer and its receipts peer share this process's
 * one thread, so with 10 recipients their work is serialized here, as it would not be across
 * 10 hosts.
 *
 * Run: `npm run bench:receipts` (about 20 s; `--quick`: fewer writes).
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { generateIdentity, Peer, Policy } from '../src/index.ts';

const quick = process.argv.includes('--quick');
const WRITES = quick ? 100 : 400;

function emit(figure: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify({ bench: 'receipts', ...figure })}\n`);
}

async function forwarderChild(policyFile: string): Promise<{ endpoint: string; stop: () => Promise<void> }> {
  const child = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(new URL('./compare/forwarder-child.ts', import.meta.url))], {
    env: { ...process.env, CLONEKV_BENCH_FORWARDER: JSON.stringify({ policy: policyFile }) },
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const [line] = (await once(createInterface({ input: child.stdout! }), 'line')) as [string];
  const { endpoint } = JSON.parse(line) as { endpoint: string };
  return {
    endpoint,
    stop: async () => {
      child.kill('SIGTERM');
      if (child.exitCode === null) await once(child, 'exit');
    },
  };
}

function summary(ms: number[]): Record<string, number> {
  const s = [...ms].sort((a, b) => a - b);
  const at = (q: number): number => Math.round(s[Math.min(s.length - 1, Math.floor(q * s.length))]! * 100) / 100;
  return { p50: at(0.5), p90: at(0.9), p99: at(0.99), mean: Math.round((s.reduce((a, b) => a + b, 0) / s.length) * 100) / 100 };
}

const writer = generateIdentity();
const recipients = Array.from({ length: 10 }, () => generateIdentity());
const policyText =
  `writers:\n  - name: op\n    key: ${writer.id}\n    prefixes: [config/]\n` +
  recipients.map((r, i) => `  - name: r${i}\n    key: ${r.id}\n    prefixes: []\n`).join('');
const policy = Policy.parse(policyText);
const dir = mkdtempSync(join(tmpdir(), 'clonekv-bench-receipts-'));
const policyFile = join(dir, 'policy.yaml');
writeFileSync(policyFile, policyText);
const fwd = await forwarderChild(policyFile);
const peers: Peer[] = [];
try {
  const w = new Peer({ server: fwd.endpoint, identity: writer, policy, subtree: 'none/', presence: false });
  peers.push(w);
  for (const r of recipients) peers.push(new Peer({ server: fwd.endpoint, identity: r, policy, subtree: 'config/', presence: false }));
  await Promise.all(peers.map((p) => p.ready()));
  for (const n of [0, 1, 10]) {
    const confirmBy = recipients.slice(0, n).map((_, i) => `r${i}`);
    const latencies: number[] = [];
    for (let i = 0; i < WRITES + 20; i++) {
      const start = performance.now();
      await w.set(`config/k${i % 50}`, `value ${i}`, n === 0 ? {} : { confirmBy, timeout: 10_000 });
      if (i >= 20) latencies.push(performance.now() - start); // the first 20 warm up
    }
    emit({ figure: n === 0 ? 'signed write, acknowledged (no receipts) ms' : `receipts from ${n} ms`, recipients: n, writes: WRITES, ...summary(latencies) });
  }
} finally {
  await Promise.all(peers.map((p) => p.close()));
  await fwd.stop();
  rmSync(dir, { recursive: true, force: true });
}
