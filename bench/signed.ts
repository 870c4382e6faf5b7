/**
 * Signed updates (issue 10), one JSON line per figure:
 *
 * 1. Ed25519 verification speed on the same keys and signatures: Node's built-in verify with a
 *    public key object made once per key (what clonekv uses), Node's verify building the key
 *    object every time, and tweetnacl's pure-JS `nacl.sign.detached.verify`; and signing with
 *    Node (what a peer with an identity uses) and with tweetnacl.
 * 2. Updates/s end to end, signed beside unsigned in the same run: a forwarder in its own
 *    process (bench/compare/forwarder-child.ts; with a policy file, so it verifies every write)
 *    and two peers in this process: a writer (with an identity, `IN_FLIGHT` writes in flight) and
 *    a reader (with the same policy, so it verifies every update again); from the first write to
 *    the reader having applied the last. Unsigned: the same without identity or policy. Rounds
 *    alternate, medians reported. The writer's signing and the reader's verification share this
 *    process's one thread.
 *
 * Run: `npm run bench:signed` (about 30 s; `--quick`: one short round).
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
import { generateIdentity, Peer, Policy, type Identity } from '../src/index.ts';
import { signedPayload, signWrite } from '../src/security/signature.ts';
import { PropertyView, encodeProperties } from '../src/protocol/properties.ts';
import { publicKeyObject } from '../src/security/identity.ts';

const quick = process.argv.includes('--quick');
const ROUNDS = quick ? 1 : 3;
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

/** A forwarder child process (with `policyFile` if given): its endpoint, and a stop function. */
async function forwarderChild(policyFile: string | undefined): Promise<{ endpoint: string; stop: () => Promise<void> }> {
  const child = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(new URL('./compare/forwarder-child.ts', import.meta.url))], {
    env: { ...process.env, CLONEKV_BENCH_FORWARDER: JSON.stringify(policyFile ? { policy: policyFile } : {}) },
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

async function throughput(signed: boolean, identity: Identity, policy: Policy, policyFile: string): Promise<number> {
  const fwd = await forwarderChild(signed ? policyFile : undefined);
  const writer = new Peer({ server: fwd.endpoint, subtree: 'none/', presence: false, ...(signed ? { identity } : {}) });
  const reader = new Peer({ server: fwd.endpoint, subtree: 'config/', presence: false, ...(signed ? { policy } : {}) });
  try {
    await Promise.all([writer.ready(), reader.ready()]);
    let applied = 0;
    reader.on('update', () => void applied++);
    const start = performance.now();
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < WRITES) {
        const i = next++;
        await writer.set(`config/k${i % 1000}`, `value ${i}`);
      }
    };
    await Promise.all(Array.from({ length: IN_FLIGHT }, worker));
    while (applied < WRITES) await new Promise((r) => setImmediate(r));
    const elapsed = performance.now() - start;
    if (reader.stats().unauthorized !== 0) throw new Error('a signed update was refused');
    return Math.round((WRITES * 1000) / elapsed);
  } finally {
    await writer.close();
    await reader.close();
    await fwd.stop();
  }
}

verifySpeed();
const identity = generateIdentity();
const policyText = `writers:\n  - name: bench\n    key: ${identity.id}\n    prefixes: [config/]\n`;
const policy = Policy.parse(policyText);
const dir = mkdtempSync(join(tmpdir(), 'clonekv-bench-signed-'));
const policyFile = join(dir, 'policy.yaml');
writeFileSync(policyFile, policyText);
const rounds: Array<{ unsigned: number; signed: number }> = [];
await throughput(false, identity, policy, policyFile); // warm-up
for (let r = 0; r < ROUNDS; r++) {
  const unsigned = await throughput(false, identity, policy, policyFile);
  const signed = await throughput(true, identity, policy, policyFile);
  rounds.push({ unsigned, signed });
  emit({ figure: 'updates/s', round: r + 1, unsigned, signed, ratio: Math.round((signed / unsigned) * 100) / 100 });
}
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const mu = median(rounds.map((r) => r.unsigned));
const ms = median(rounds.map((r) => r.signed));
rmSync(dir, { recursive: true, force: true });
emit({ figure: 'updates/s median', writes: WRITES, inFlight: IN_FLIGHT, unsigned: mu, signed: ms, ratio: Math.round((ms / mu) * 100) / 100 });
