/**
 * Damaged data directories (issue 8): a truncated file (a torn tail or half of it gone), a file
 * overwritten with garbage, flipped bytes in stored values, or a directory written by a newer
 * format never load garbage. The forwarder either repairs (and says what it dropped or rebuilt)
 * and then serves exactly what was acknowledged, or refuses to start with CLONEKV_STORAGE
 * naming the file and what to do.
 *
 * Topology: in-process durable Forwarders on ephemeral ports writing to a temporary directory,
 * which the test then damages (copies of it, one per case); `clonekv serve --data` as a child
 * process for the command-line message.
 */
import assert from 'node:assert/strict';
import { cpSync, readFileSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { crc32 } from 'node:zlib';
import { Forwarder, Peer, type ForwarderOptions } from '../src/index.ts';
import { decodeBody } from '../src/protocol/values.ts';
import { DurableStore } from '../src/store/durable-store.ts';
import { dataDir, runCli } from './helpers.ts';

const FILE = 'clonekv.mdb';

/** Writes `entries` through a forwarder's load (sequenced like any write) and closes it. */
async function seed(dir: string, entries: Array<[string, unknown]>, options: ForwarderOptions = {}): Promise<void> {
  const fwd = await Forwarder.start({ port: 0, dataDir: dir, ...options });
  for (const e of entries) await fwd.load([e]);
  // Let the last group commit before closing (close also flushes).
  await fwd.close();
}

/** A copy of `dir` for one case. */
function copy(t: TestContext, dir: string): string {
  const to = dataDir(t);
  cpSync(dir, to, { recursive: true });
  return to;
}

/** Every offset of `needle` in `hay`. */
function offsets(hay: Buffer, needle: Buffer): number[] {
  const out: number[] = [];
  for (let i = hay.indexOf(needle); i >= 0; i = hay.indexOf(needle, i + 1)) out.push(i);
  return out;
}

type Outcome = { map: Record<string, unknown>; repairs: string[] } | { error: Error & { code?: string } };

/**
 * Starts a forwarder on `dir` and returns what it serves (key → value, from a peer's snapshot),
 * or the refusal. A forwarder that starts is closed again.
 */
async function served(dir: string): Promise<Outcome> {
  let fwd: Forwarder;
  try {
    fwd = await Forwarder.start({ port: 0, dataDir: dir });
  } catch (err) {
    return { error: err as Error & { code?: string } };
  }
  try {
    const p = new Peer({ server: fwd.endpoint, presence: false });
    try {
      await p.ready();
      const map: Record<string, unknown> = {};
      for (const e of p.entries()) map[e.key] = e.value;
      return { map, repairs: fwd.recovery?.repairs ?? [] };
    } finally {
      await p.close();
    }
  } finally {
    await fwd.close();
  }
}

/**
 * What a forwarder started on `dir` would load: its recovery reads exactly these entries, and
 * the checks run at open. No sockets, so many damaged copies are quick to try.
 */
function outcome(dir: string, options: { historyMax?: number } = {}): Outcome {
  let store: DurableStore | undefined;
  try {
    store = DurableStore.open(dir, { historyMax: options.historyMax ?? 1_000_000, historyBytes: 1 << 28 });
    const map: Record<string, unknown> = {};
    for (const [key, entry] of store.entries()) map[key] = decodeBody(entry.body, true);
    return { map, repairs: [...store.repairs] };
  } catch (err) {
    return { error: err as Error & { code?: string } };
  } finally {
    store?.close(false);
  }
}

function assertRefused(r: Outcome, dir: string, what: RegExp): void {
  assert.ok('error' in r, `expected a refusal, got ${JSON.stringify(r)}`);
  assert.equal(r.error.code, 'CLONEKV_STORAGE', r.error.message);
  assert.ok(r.error.message.includes(join(dir, FILE)) || r.error.message.includes(dir), `names the file: ${r.error.message}`);
  assert.match(r.error.message, what);
  assert.match(r.error.message, /move .* aside .*--memory/, `says what to do: ${r.error.message}`);
}

const ENTRIES: Array<[string, unknown]> = [
  ['cfg/a', 'MARK-A-1'],
  ['cfg/b', 'MARK-B-1'],
  ['cfg/a', 'MARK-A-2'],
  ['cfg/c', { deep: 'MARK-C-1' }],
];
const ACKNOWLEDGED = { 'cfg/a': 'MARK-A-2', 'cfg/b': 'MARK-B-1', 'cfg/c': { deep: 'MARK-C-1' } };

test('truncated files (a torn tail, half gone) and garbage are refused with the file named and what to do', async (t) => {
  const dir = dataDir(t);
  await seed(dir, ENTRIES);
  assert.deepEqual(await served(copy(t, dir)), { map: ACKNOWLEDGED, repairs: [] }, 'undamaged, a forwarder serves it');
  assert.deepEqual(outcome(copy(t, dir)), { map: ACKNOWLEDGED, repairs: [] });

  const size = statSync(join(dir, FILE)).size;
  const torn = copy(t, dir);
  truncateSync(join(torn, FILE), size - 4096);
  assertRefused(outcome(torn), torn, /truncated/);

  const half = copy(t, dir);
  truncateSync(join(half, FILE), Math.floor(size / 2));
  assertRefused(outcome(half), half, /truncated/);

  const header = copy(t, dir);
  truncateSync(join(header, FILE), 100);
  assertRefused(outcome(header), header, /not a clonekv data file|truncated/);

  const garbage = copy(t, dir);
  writeFileSync(join(garbage, FILE), Buffer.alloc(size, 0x5a));
  assertRefused(outcome(garbage), garbage, /not a clonekv data file/);
});

test('flipped bytes in any stored copy of a value: repaired to exactly what was acknowledged, or refused', async (t) => {
  const dir = dataDir(t);
  await seed(dir, ENTRIES);
  const original = readFileSync(join(dir, FILE));
  let repaired = 0;
  /** A flip that was repaired (some copies lie in pages LMDB no longer uses: flipping those changes nothing). */
  let repairedAt = -1;
  let refused = 0;
  // Every stored copy of every value (map entries, log records, stale pages): one flip each.
  const marks = ['MARK-A-1', 'MARK-A-2', 'MARK-B-1', 'MARK-C-1'].flatMap((m) => offsets(original, Buffer.from(m)));
  assert.ok(marks.length >= 7, `found the stored values (${marks.length} copies)`);
  for (const at of marks) {
    const d = copy(t, dir);
    const bytes = Buffer.from(original);
    bytes[at + 5]! ^= 0x01;
    writeFileSync(join(d, FILE), bytes);
    const r = outcome(d);
    if ('error' in r) {
      assertRefused(r, d, /damaged/);
      refused++;
      continue;
    }
    // Never a value that was not acknowledged last: the whole map, exactly.
    assert.deepEqual(r.map, ACKNOWLEDGED, `flip at ${at}: ${r.repairs.join('; ')}`);
    if (r.repairs.length > 0) {
      repaired++;
      repairedAt = at;
    }
  }
  assert.ok(repaired > 0, 'damage the forwarder could repair was repaired (and said so)');
  // And a forwarder on a repaired copy serves the acknowledged map and reports the repair.
  const d = copy(t, dir);
  const bytes = Buffer.from(original);
  bytes[repairedAt + 5]! ^= 0x01;
  writeFileSync(join(d, FILE), bytes);
  const r = await served(d);
  assert.ok(!('error' in r) && r.repairs.length > 0, JSON.stringify(r));
  void refused;
});

test('a damaged map entry whose last update the log no longer holds is refused, not dropped', async (t) => {
  const dir = dataDir(t);
  // A one-entry history: cfg/b's only update is compacted away by the later writes.
  await seed(dir, ENTRIES, { historyMax: 1 });
  const original = readFileSync(join(dir, FILE));
  const copies = offsets(original, Buffer.from('MARK-B-1'));
  assert.ok(copies.length >= 1);
  const d = copy(t, dir);
  const bytes = Buffer.from(original);
  for (const at of copies) bytes[at + 5]! ^= 0x01;
  writeFileSync(join(d, FILE), bytes);
  assertRefused(outcome(d, { historyMax: 1 }), d, /entry of key "cfg\/b" .* damaged/);
});

test('a data directory written by a newer format is refused, naming the version; the command line says what to do', async (t) => {
  const dir = dataDir(t);
  await seed(dir, ENTRIES);
  const bytes = readFileSync(join(dir, FILE));
  // Rewrite every copy of the meta record with format 99 and a matching checksum.
  const at = offsets(bytes, Buffer.from('{"format":1,'));
  assert.ok(at.length >= 1, 'found the meta record');
  for (const start of at) {
    const end = bytes.indexOf('}', start) + 1;
    const json = Buffer.from(bytes.subarray(start, end).toString().replace('"format":1,', '"format":9,'));
    json.copy(bytes, start);
    bytes.writeUInt32LE(crc32(json), start - 4);
  }
  writeFileSync(join(dir, FILE), bytes);
  const r = await served(dir);
  assertRefused(r, dir, /newer version of clonekv \(data format 9; this version reads format 1\)/);

  const cli = await runCli(['serve', '--data', dir, '--port', '0'], {}, 15_000);
  assert.equal(cli.code, 1, cli.stderr);
  assert.match(cli.stderr, /^clonekv: .*newer version of clonekv.*move .* aside/);
  assert.doesNotMatch(cli.stderr, /\n\s+at /, 'no stack trace');
});
