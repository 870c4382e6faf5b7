/**
 * Signed updates (issue 10), one JSON line per figure:
 *
 * 1. Ed25519 verification speed on the same keys and signatures: Node's built-in verify with a
 *    public key object made once per key (what clonekv uses), Node's verify building the key
 *    object every time, and tweetnacl's pure-JS `nacl.sign.detached.verify`; and signing with
 *    Node (what a peer with an identity uses) and with tweetnacl.
 * 2. Updates/s end to end, signed beside unsigned in the same run, laid out as deployed: a
 *    forwarder, a writer and a reader, each in its own process (bench/signed-child.ts). Signed:
 *    the writer has an identity (`IN_FLIGHT` writes in flight), the forwarder a policy file (it
 *    verifies every write) and the reader the same policy (it verifies every update again);
 *    from the first write to the reader having applied the last. Unsigned: the same without
 *    identity or policy. Rounds alternate, medians reported. `--baseline DIR` also measures
 *    signed with the library in DIR (a copy of another version's src/, e.g. made with
 *    `git archive main src | tar -x -C .bench-base`), in the same rounds: before and after.
 *
 * Run: `npm run bench:signed` (about a minute; `--quick`: one short round; `--rounds N`).
 */
import { createPublicKey, verify as cryptoVerify } from 'node:crypto';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import nacl from 'tweetnacl';
import { generateIdentity, saveIdentity } from '../src/index.ts';
import { signedPayload, signWrite } from '../src/security/signature.ts';
import { PropertyView, encodeProperties } from '../src/protocol/properties.ts';
import { publicKeyObject } from '../src/security/identity.ts';

const quick = process.argv.includes('--quick');
const roundsArg = process.argv.indexOf('--rounds');
const ROUNDS = roundsArg > 0 ? Number(process.argv[roundsArg + 1]) : quick ? 1 : 3;
const WRITES = quick ? 10_000 : 30_000;
const IN_FLIGHT = 512;

function emit(figure: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify({ bench: 'signed', ...figure })}\n`);
}

/** Calls `fn` for about `ms` ms (at least `min` times); operations per second. */
function rate(fn: (i: number) => void, ms: number, min = 20): number {
  const start = performance.now();
  let n = 0;
  while (n < min || performance.now() - start < ms) fn(n++);
  return Math.round((n * 1000) / (performance.now() - start));
}

function verifySpeed(): void {
  const id = generateIdentity();
  const samples = Array.from({ length: 64 }, (_, i) => {
    const props: Array<[string, string]> = [['enc', 'msgpack']];
    const key = Buffer.from(`config/key-${i}`);
    const uuid = Buffer.alloc(16, i);
    const body = Buffer.from(`value ${i}`.padEnd(64, '.'));
    signWrite(id, key, uuid, body, props);
    const view = new PropertyView(encodeProperties(props));
    return { payload: signedPayload(key, uuid, body, (n) => view.get(n)), sig: Buffer.from(view.get('sig')!, 'base64url') };
  });
  const keyObject = publicKeyObject(id.publicKey);
  const spki = Buffer.concat([Buffer.from('302a300506032b6570032100', 'hex'), id.publicKey]);
  const ms = quick ? 300 : 1000;
  const s = (i: number) => samples[i % samples.length]!;
  for (const { payload, sig } of samples) {
    if (!cryptoVerify(null, payload, keyObject, sig) || !nacl.sign.detached.verify(payload, sig, id.publicKey)) throw new Error('a signature did not verify');
  }
  emit({ figure: 'verify/s', node: rate((i) => cryptoVerify(null, s(i).payload, keyObject, s(i).sig), ms) });
  emit({ figure: 'verify/s', nodeKeyEachTime: rate((i) => cryptoVerify(null, s(i).payload, createPublicKey({ key: spki, format: 'der', type: 'spki' }), s(i).sig), ms) });
  emit({ figure: 'verify/s', tweetnacl: rate((i) => nacl.sign.detached.verify(s(i).payload, s(i).sig, id.publicKey), ms) });
  const props: Array<[string, string]> = [];
  emit({ figure: 'sign/s', node: rate((i) => { props.length = 0; signWrite(id, Buffer.from('config/k'), Buffer.alloc(16, i), s(i).payload, props); }, ms) });
  emit({ figure: 'sign/s', tweetnacl: rate((i) => nacl.sign.detached(s(i).payload, id.secretKey), ms) });
}

/** A child process of bench/signed-child.ts: its JSON lines, stdin, and a stop function. */
function child(config: Record<string, unknown>): { next: () => Promise<Record<string, unknown>>; send: (o: unknown) => void; stop: () => Promise<void> } {
  const proc = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(new URL('./signed-child.ts', import.meta.url))], {
    env: { ...process.env, CLONEKV_BENCH_SIGNED: JSON.stringify(config) },
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const queue: Array<Record<string, unknown>> = [];
  const waiting: Array<(o: Record<string, unknown>) => void> = [];
  createInterface({ input: proc.stdout! }).on('line', (line) => {
    const o = JSON.parse(line) as Record<string, unknown>;
    const w = waiting.shift();
    if (w) w(o);
    else queue.push(o);
  });
  return {
    next: () => (queue.length > 0 ? Promise.resolve(queue.shift()!) : new Promise((r) => waiting.push(r))),
    send: (o) => void proc.stdin!.write(`${JSON.stringify(o)}\n`),
    stop: async () => {
      proc.kill('SIGTERM');
      if (proc.exitCode === null && proc.signalCode === null) await once(proc, 'exit');
    },
  };
}

/**
 * Updates/s through a forwarder, a writer and a reader, each in its own process (as deployed),
 * importing `src`: from the writer's first write to the reader having applied the last. Signed:
 * the writer has an identity, the forwarder and the reader the policy (both verify every update).
 */
async function throughput(signed: boolean, src: string, identityFile: string, policyFile: string): Promise<number> {
  const fwd = child({ role: 'forwarder', src, ...(signed ? { policy: policyFile } : {}) });
  const { endpoint } = (await fwd.next()) as { endpoint: string };
  const reader = child({ role: 'reader', src, endpoint, writes: WRITES, ...(signed ? { policy: policyFile } : {}) });
  const writer = child({ role: 'writer', src, endpoint, writes: WRITES, inFlight: IN_FLIGHT, ...(signed ? { identity: identityFile } : {}) });
  try {
    await Promise.all([reader.next(), writer.next()]);
    const start = performance.now();
    writer.send({ go: true });
    const done = (await reader.next()) as { applied: number; unauthorized: number };
    const elapsed = performance.now() - start;
    if (done.unauthorized !== 0) throw new Error('a signed update was refused');
    return Math.round((WRITES * 1000) / elapsed);
  } finally {
    await Promise.all([writer.stop(), reader.stop()]);
    await fwd.stop();
  }
}

verifySpeed();
const identity = generateIdentity();
const policyText = `writers:\n  - name: bench\n    key: ${identity.id}\n    prefixes: [config/]\n`;
const dir = mkdtempSync(join(tmpdir(), 'clonekv-bench-signed-'));
const policyFile = join(dir, 'policy.yaml');
const identityFile = join(dir, 'identity.json');
writeFileSync(policyFile, policyText);
saveIdentity(identity, identityFile);
const src = fileURLToPath(new URL('../src', import.meta.url));
const baselineArg = process.argv.indexOf('--baseline');
const baseline = baselineArg > 0 ? process.argv[baselineArg + 1] : undefined;
const rounds: Array<{ unsigned: number; signed: number; baseline?: number }> = [];
await throughput(false, src, identityFile, policyFile); // warm-up
for (let r = 0; r < ROUNDS; r++) {
  const unsigned = await throughput(false, src, identityFile, policyFile);
  const before = baseline === undefined ? undefined : await throughput(true, baseline, identityFile, policyFile);
  const signed = await throughput(true, src, identityFile, policyFile);
  rounds.push({ unsigned, signed, ...(before === undefined ? {} : { baseline: before }) });
  emit({ figure: 'updates/s', round: r + 1, unsigned, signed, ratio: Math.round((signed / unsigned) * 100) / 100, ...(before === undefined ? {} : { signedBaseline: before }) });
}
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const mu = median(rounds.map((r) => r.unsigned));
const ms = median(rounds.map((r) => r.signed));
const mb = baseline === undefined ? undefined : median(rounds.map((r) => r.baseline!));
rmSync(dir, { recursive: true, force: true });
emit({ figure: 'updates/s median', writes: WRITES, inFlight: IN_FLIGHT, rounds: ROUNDS, unsigned: mu, signed: ms, ratio: Math.round((ms / mu) * 100) / 100, ...(mb === undefined ? {} : { signedBaseline: mb, baselineRatio: Math.round((mb / mu) * 100) / 100 }) });
