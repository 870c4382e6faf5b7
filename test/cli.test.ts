/**
 * The `clonekv` command line, run as real child processes.
 *
 * Topology for most tests: one `clonekv serve --port 0 --json` child (ROUTER P, XPUB P+1,
 * SUB P+2 on tcp://127.0.0.1), short-lived `clonekv get/set/...` children that join it with
 * their own DEALER and SUB sockets, and in-process library Peers that check what the CLI did.
 *
 *   test process ── Peer (DEALER, SUB) ──┐
 *   clonekv set/get/... child ───────────┼──► clonekv serve child :P :P+1 :P+2
 *   clonekv watch child ─────────────────┘
 *
 * Usage errors and --help are checked on a few real processes and, for the full matrix, through
 * the CLI's own `run()` in this process (each child costs about half a second of CPU to start).
 * Children are SIGKILLed in teardown if still alive; peers are closed by their fixtures.
 */
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type AddressInfo } from 'node:net';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { connectAddress, run } from '../src/cli/main.ts';
import type { WatchEntry } from '../src/index.ts';
import { readyPeer, runCli, spawnCli, waitFor, within, type CliProcess } from './helpers.ts';
import { propMap, rawDealer, ZERO_SEQ } from './raw-sockets.ts';

const COMMANDS = ['serve', 'get', 'set', 'del', 'dump', 'load', 'watch', 'stats', 'peers'] as const;

interface Served {
  readonly endpoint: string;
  readonly port: number;
  readonly epoch: string;
  readonly proc: CliProcess;
}

/**
 * Long-running children (serve, watch) still alive. `t.after` kills them normally; if the runner
 * kills this file instead (it sends SIGTERM on a file-level timeout), they would be orphaned and
 * keep their ports, so they are killed here too.
 */
const running = new Set<ChildProcess>();
process.once('SIGTERM', () => {
  for (const child of running) child.kill('SIGKILL');
  process.exit(143);
});

/** {@link spawnCli}, tracked in {@link running}. */
function spawnTracked(t: TestContext, args: string[]): CliProcess {
  const proc = spawnCli(t, args);
  running.add(proc.child);
  proc.child.once('exit', () => running.delete(proc.child));
  return proc;
}

/** Starts `clonekv serve --port 0 --json` (with `flags`) and reads its endpoint line. */
async function serve(t: TestContext, flags: string[] = []): Promise<Served> {
  const proc = spawnTracked(t, ['serve', '--memory', '--port', '0', '--json', ...flags]);
  const line = await proc.line(/^\{"endpoint".*\}$/);
  const info = JSON.parse(line) as { endpoint: string; epoch: string; snapshot: string; publisher: string; collector: string };
  const m = /^tcp:\/\/127\.0\.0\.1:(\d+)$/.exec(info.endpoint);
  assert.ok(m, `serve printed a tcp endpoint on 127.0.0.1: ${line}`);
  const port = Number(m[1]);
  assert.equal(info.publisher, `tcp://127.0.0.1:${port + 1}`);
  assert.equal(info.collector, `tcp://127.0.0.1:${port + 2}`);
  return { endpoint: info.endpoint, port, epoch: info.epoch, proc };
}

/** A base port P with nothing listening on it (bound once, then released). */
async function closedPort(): Promise<number> {
  for (;;) {
    const srv = createServer();
    await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
    const { port } = srv.address() as AddressInfo;
    await new Promise<void>((resolve) => srv.close(() => resolve()));
    if (port <= 65_533) return port;
  }
}

/** The complete (newline-terminated) stdout lines of a child, parsed as JSON. */
function jsonLines(proc: CliProcess): unknown[] {
  const lines = proc.stdout().split('\n');
  lines.pop(); // the unterminated rest
  return lines.filter((l) => l.trim() !== '').map((l) => JSON.parse(l) as unknown);
}

/** Resolves with the exit code and signal of `proc` (created before the signal is sent). */
function exited(proc: CliProcess): Promise<[number | null, NodeJS.Signals | null]> {
  return once(proc.child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
}

// The subtests share one serve child, use disjoint key prefixes, and run three at a time.
test('clonekv commands against a `clonekv serve --port 0 --json` child', { concurrency: 3 }, async (t) => {
  const s = await serve(t);
  const subtests: Promise<void>[] = [];

  subtests.push(t.test('set prints the sequence and exits 0 only once the write is sequenced', async (t) => {
    // Without --json the value is a string, even one that looks like JSON.
    const r = await runCli(['set', 'greeting', '{"hello": 42}', '--server', s.endpoint]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^\d+\n$/);
    const seq = Number(r.stdout.trim());
    // A peer joining right after the exit gets a snapshot that already holds the write.
    const check = await readyPeer(t, s.endpoint, { subtree: 'greeting' });
    assert.equal(check.get('greeting'), '{"hello": 42}');
    assert.equal(check.version('greeting'), seq, 'the printed sequence is the version of the write');
  }));

  subtests.push(t.test('set --json parses the value as JSON', async (t) => {
    const r = await runCli(['set', 'j/object', '{"a":1,"b":[true,null,"x"],"c":{"d":"e"}}', '--json', '--server', s.endpoint]);
    assert.equal(r.code, 0, r.stderr);
    const check = await readyPeer(t, s.endpoint, { subtree: 'j/' });
    assert.deepEqual(check.get('j/object'), { a: 1, b: [true, null, 'x'], c: { d: 'e' } });
    assert.equal(check.version('j/object'), Number(r.stdout.trim()));
  }));

  subtests.push(t.test('get prints strings raw and other values as JSON; --json always JSON; a missing key exits 3', async (t) => {
    const writer = await readyPeer(t, s.endpoint);
    await writer.set('g/str', 'plain text');
    await writer.set('g/obj', { port: 5432, tags: ['a', 'b'] });
    const [str, obj, strJson, missing] = await Promise.all([
      runCli(['get', 'g/str', '--server', s.endpoint]),
      runCli(['get', 'g/obj', '--server', s.endpoint]),
      runCli(['get', 'g/str', '--json', '--server', s.endpoint]),
      runCli(['get', 'g/nope', '--server', s.endpoint]),
    ]);
    assert.equal(str.code, 0, str.stderr);
    assert.equal(str.stdout, 'plain text\n');
    assert.equal(obj.code, 0, obj.stderr);
    assert.deepEqual(JSON.parse(obj.stdout), { port: 5432, tags: ['a', 'b'] });
    assert.equal(strJson.code, 0, strJson.stderr);
    assert.equal(strJson.stdout, '"plain text"\n');
    assert.equal(missing.code, 3, missing.stderr);
    assert.equal(missing.stdout, '');
    assert.match(missing.stderr, /"g\/nope"/);
    assert.ok(missing.stderr.includes(s.endpoint), `names the server: ${missing.stderr}`);
  }));

  subtests.push(t.test('del deletes a key and prints the sequence of the delete', async (t) => {
    const watcher = await readyPeer(t, s.endpoint, { subtree: 'd/' });
    const setSeq = await watcher.set('d/key', 'v');
    const del = await runCli(['del', 'd/key', '--server', s.endpoint]);
    assert.equal(del.code, 0, del.stderr);
    assert.match(del.stdout, /^\d+\n$/);
    const delSeq = Number(del.stdout.trim());
    assert.ok(delSeq > setSeq, `the delete (${delSeq}) is sequenced after the set (${setSeq})`);
    await waitFor('the peer to see the delete', () => watcher.sequence >= delSeq);
    assert.equal(watcher.has('d/key'), false);
  }));

  subtests.push(t.test('dump PREFIX prints key<TAB>value lines; dump --json prints one object', async (t) => {
    const writer = await readyPeer(t, s.endpoint);
    await writer.set('cfg/a', 'x');
    await writer.set('cfg/b', { n: 1 });
    await writer.set('cfg/c', 3);
    await writer.set('other/z', 'not shown');
    const [lines, json] = await Promise.all([
      runCli(['dump', 'cfg/', '--server', s.endpoint]),
      runCli(['dump', 'cfg/', '--json', '--server', s.endpoint]),
    ]);
    assert.equal(lines.code, 0, lines.stderr);
    assert.deepEqual(lines.stdout.split('\n').filter(Boolean).sort(), ['cfg/a\tx', 'cfg/b\t{"n":1}', 'cfg/c\t3']);
    assert.equal(json.code, 0, json.stderr);
    assert.equal(json.stdout.trim().split('\n').length, 1, 'a single line');
    assert.deepEqual(JSON.parse(json.stdout), { 'cfg/a': 'x', 'cfg/b': { n: 1 }, 'cfg/c': 3 });
  }));

  subtests.push(t.test('set --ttl: the forwarder deletes the key (reason expired) once the time runs out', async (t) => {
    const watcher = await readyPeer(t, s.endpoint, { subtree: 'session/' });
    const seen: WatchEntry[] = [];
    let deletedAt = 0;
    watcher.on('update', (e) => {
      seen.push(e);
      if (e.operation === 'delete') deletedAt = performance.now();
    });
    const started = performance.now();
    const r = await runCli(['set', 'session/abc', 'token', '--ttl', '0.3', '--server', s.endpoint]);
    assert.equal(r.code, 0, r.stderr);
    await waitFor('the key to expire', () => deletedAt > 0, 5_000);
    assert.deepEqual(
      seen.map((e) => [e.key, e.operation, e.value, e.reason]),
      [
        ['session/abc', 'put', 'token', undefined],
        ['session/abc', 'delete', undefined, 'expired'],
      ],
    );
    // The forwarder stamped the write after `started`, so it cannot expire sooner than 0.3 s after.
    assert.ok(deletedAt - started >= 290, `expired after ${Math.round(deletedAt - started)} ms`);
    assert.equal(watcher.has('session/abc'), false);
  }));

  subtests.push(t.test('--if-version: a lost conditional write exits 4 naming the key and its current version', async (t) => {
    const first = await runCli(['set', 'cas/key', 'v1', '--if-version', '0', '--server', s.endpoint]);
    assert.equal(first.code, 0, first.stderr);
    const v1 = Number(first.stdout.trim());

    const stale = await runCli(['set', 'cas/key', 'v2', '--if-version', String(v1 + 10), '--server', s.endpoint]);
    assert.equal(stale.code, 4, stale.stderr);
    assert.equal(stale.stdout, '');
    assert.match(stale.stderr, /"cas\/key"/);
    assert.match(stale.stderr, new RegExp(`current version is ${v1}\\b`));

    const ok = await runCli(['set', 'cas/key', 'v2', '--if-version', String(v1), '--server', s.endpoint]);
    assert.equal(ok.code, 0, ok.stderr);
    const check = await readyPeer(t, s.endpoint, { subtree: 'cas/' });
    assert.equal(check.get('cas/key'), 'v2');
    assert.equal(check.version('cas/key'), Number(ok.stdout.trim()));
  }));

  subtests.push(t.test('watch PREFIX --json prints the current entries, then changes by another writer, and stops on SIGTERM with 0', async (t) => {
    const writer = await readyPeer(t, s.endpoint);
    const va = await writer.set('w/a', 1);
    const vb = await writer.set('w/b', { on: true });
    await writer.set('x/outside', 'ignored');
    const w = spawnTracked(t, ['watch', 'w/', '--json', '--server', s.endpoint]);
    const initial = await waitFor('the two current entries', () => (jsonLines(w).length >= 2 ? jsonLines(w) : undefined));
    assert.deepEqual(initial, [
      { key: 'w/a', op: 'put', value: 1, version: va, isUpdate: false },
      { key: 'w/b', op: 'put', value: { on: true }, version: vb, isUpdate: false },
    ]);
    await writer.set('x/outside', 'still ignored');
    const seq = await writer.set('w/a', 2);
    const delSeq = await writer.delete('w/b');
    const all = await waitFor('the change and the delete', () => (jsonLines(w).length >= 4 ? jsonLines(w) : undefined));
    assert.deepEqual(all.slice(2), [
      { key: 'w/a', op: 'put', value: 2, version: seq, isUpdate: true },
      { key: 'w/b', op: 'delete', version: delSeq, isUpdate: true, reason: 'deleted' },
    ]);
    const exit = exited(w);
    w.child.kill('SIGTERM');
    const [code, signal] = await within('watch to exit after SIGTERM', exit, 10_000);
    assert.equal(signal, null);
    assert.equal(code, 0);
    assert.equal(jsonLines(w).length, 4, 'nothing else printed');
  }));

  subtests.push(t.test('load FILE writes every key of a JSON object, verified with dump --json', async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'clonekv-cli-test-'));
    t.after(() => rm(dir, { recursive: true, force: true }));
    const data: Record<string, unknown> = { 'bulk/nested': { db: { host: 'h', port: 1 } }, 'bulk/list': [1, 2, 3], 'bulk/text': 'hi' };
    for (let i = 0; i < 1000; i++) data[`bulk/k${i}`] = i;
    const file = join(dir, 'data.json');
    await writeFile(file, JSON.stringify(data));
    const r = await runCli(['load', file, '--server', s.endpoint]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /loaded 1003 keys/);
    const dump = await runCli(['dump', 'bulk/', '--json', '--server', s.endpoint]);
    assert.equal(dump.code, 0, dump.stderr);
    assert.deepEqual(JSON.parse(dump.stdout), data);
  }));

  subtests.push(t.test("stats --json prints the forwarder's counters", async (t) => {
    const writer = await readyPeer(t, s.endpoint);
    await writer.set('s/a', 1);
    await writer.set('s/b', 2);
    const last = await writer.delete('s/a');
    await assert.rejects(writer.set('s/b', 3, { ifVersion: last + 1_000 }));
    const r = await runCli(['stats', '--json', '--server', s.endpoint]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim().split('\n').length, 1, 'one JSON line');
    const stats = JSON.parse(r.stdout) as Record<string, unknown>;
    assert.equal(stats.server, s.endpoint);
    assert.equal(stats.epoch, s.epoch);
    // Other subtests write concurrently: the counters are at least what this test caused.
    const atLeast = (name: string, n: number): void => {
      assert.ok(typeof stats[name] === 'number' && stats[name] >= n, `${name} = ${String(stats[name])} ≥ ${n}`);
    };
    atLeast('sequence', last);
    atLeast('published', 3);
    atLeast('keys', 1);
    atLeast('conflicts', 1);
    atLeast('peers', 1); // at least the writer, which is live
    atLeast('snapshots', 1);
  }));

  subtests.push(t.test('CLONEKV_SERVER is honoured, and --server wins over it', async (t) => {
    const writer = await readyPeer(t, s.endpoint);
    await writer.set('env/key', 'from env');
    const nowhere = `tcp://127.0.0.1:${await closedPort()}`;
    const [get, override] = await Promise.all([
      runCli(['get', 'env/key'], { CLONEKV_SERVER: s.endpoint }),
      runCli(['get', 'env/key', '--server', s.endpoint, '--timeout', '3000'], { CLONEKV_SERVER: nowhere }),
    ]);
    assert.equal(get.code, 0, get.stderr);
    assert.equal(get.stdout, 'from env\n');
    assert.equal(override.code, 0, override.stderr);
    assert.equal(override.stdout, 'from env\n');
  }));
  await Promise.all(subtests);
});

/** Runs the CLI's `run()` in this process (no network is touched by these cases). */
async function runInProcess(argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const code = await run(argv, { out: (x) => (stdout += x + '\n'), err: (x) => (stderr += x + '\n'), progress: false });
  return { code, stdout, stderr };
}

const USAGE_ERRORS: Array<[args: string[], stderr: RegExp]> = [
  [['frobnicate'], /unknown command "frobnicate"/],
  [['get'], /missing argument/],
  [['set', 'k', 'v', '--ttl', 'soon'], /--ttl .*"soon"/],
  [['set', 'k', '{not json', '--json'], /"k" is not valid JSON/],
  [['set', 'k'], /missing argument/],
  [['del'], /missing argument/],
  [['load'], /missing argument/],
  [['set', 'k', 'v', 'extra'], /unexpected argument "extra"/],
  [['get', 'k', '--bogus'], /bogus/],
  [['set', 'k', 'v', '--ttl', '0'], /--ttl/],
  [['set', 'k', 'v', '--ttl=-1'], /--ttl/],
  [['set', 'k', 'v', '--if-version', 'latest'], /--if-version/],
  [['get', 'k', '--timeout', 'never'], /--timeout/],
  [['serve', '--port', 'eighty'], /--port/],
  [['load', join(tmpdir(), 'clonekv-no-such-file.json')], /cannot read .*clonekv-no-such-file\.json: no such file/],
  // Keys: empty is a usage error; too long is named as a key (not as an option of a subtree peer).
  [['get', ''], /^clonekv: KEY is empty/],
  [['set', '', 'v'], /^clonekv: KEY is empty/],
  [['del', ''], /^clonekv: KEY is empty/],
  [['get', 'k'.repeat(300)], /^clonekv: key "k{40}…" is 300 bytes; keys are 1 to 255 bytes/],
  [['set', 'é'.repeat(128), 'v'], /^clonekv: key "é{40}…" is 256 bytes/],
  [['dump', 'p'.repeat(256)], /^clonekv: prefix "p{40}…" is 256 bytes/],
  [['set', '$peers/x', 'v'], /^clonekv: key "\$peers\/x" is reserved/],
  // Every command refuses the flags it does not take, by name; serve refuses the client's.
  [['serve', '--server', 'tcp://127.0.0.1:5556'], /^clonekv: serve does not take --server; try clonekv serve --help\n/],
  [['serve', '--timeout', '100'], /^clonekv: serve does not take --timeout/],
  [['serve', '--ttl', '5'], /^clonekv: serve does not take --ttl/],
  [['get', 'k', '--port', '1'], /^clonekv: get does not take --port/],
  [['del', 'k', '--json'], /^clonekv: del does not take --json/],
  [['load', 'f.json', '--json'], /^clonekv: load does not take --json/],
  [['dump', '--ttl', '1'], /^clonekv: dump does not take --ttl/],
  [['stats', '--updates-only'], /^clonekv: stats does not take --updates-only/],
  [['peers', '--prefix', 'x'], /^clonekv: peers does not take --prefix/],
  [['get', 'k', '--bogus'], /^clonekv: unknown option --bogus; try clonekv get --help\n/],
  [['set', 'k', '-5'], /^clonekv: unknown option -5; .*goes after "--"/],
  [['get', 'k', '--timeout'], /^clonekv: --timeout needs a value/],
  [['get', 'k', '--json=yes'], /^clonekv: --json takes no value/],
  // Durations: bounded by what a timer can wait, and never NaN, negative or empty.
  [['get', 'k', '--timeout', '2147483648'], /--timeout expects a whole number of milliseconds from 1 to 2147483647, got "2147483648"/],
  [['get', 'k', '--timeout', 'NaN'], /--timeout .*"NaN"/],
  [['get', 'k', '--timeout=-5'], /--timeout .*"-5"/],
  [['get', 'k', '--timeout', ''], /--timeout .*""/],
  [['dump', '--timeout', '1e10'], /--timeout .*"1e10"/],
  [['set', 'k', 'v', '--ttl', '31536001'], /--ttl expects a number of seconds above 0 and at most 31536000 \(one year\), got "31536001"/],
  [['set', 'k', 'v', '--ttl', 'Infinity'], /--ttl .*"Infinity"/],
  [['set', 'k', 'v', '--ttl', 'NaN'], /--ttl .*"NaN"/],
  [['serve', '--heartbeat', '2147483648'], /--heartbeat expects .* from 10 to 2147483647/],
  [['serve', '--heartbeat', '5'], /--heartbeat/],
  [['serve', '--port', '65534'], /--port expects a whole number from 0 to 65533/],
  [['serve', '--max-value-bytes', '0'], /--max-value-bytes/],
  [['serve', '--memory', '--data', 'somewhere'], /--memory and --data exclude each other/],
  [['serve', '--durability', 'fast', '--memory'], /--durability takes sync or async, not "fast"/],
  [['serve', '--durability', 'async', '--memory'], /--durability needs a data directory/],
  // The forwarder's bounds, as flags of serve: named, with their range.
  [['serve', '--memory', '--history-max', '0'], /^clonekv: --history-max expects a whole number from 1 to 1000000000, got "0"/],
  [['serve', '--memory', '--history-max', 'many'], /--history-max .*"many"/],
  [['serve', '--memory', '--history-bytes', '1023'], /^clonekv: --history-bytes expects a whole number from 1024 to \d+, got "1023"/],
  [['serve', '--memory', '--history-bytes', '2k'], /--history-bytes .*"2k"/],
  [['serve', '--memory', '--dedup-ttl', '3600001'], /^clonekv: --dedup-ttl expects a whole number of milliseconds from 1 to 3600000, got "3600001"/],
  [['serve', '--memory', '--dedup-ttl=-1'], /--dedup-ttl .*"-1"/],
  [['serve', '--memory', '--dedup-max', '0'], /^clonekv: --dedup-max expects a whole number from 1 to 100000000, got "0"/],
  [['serve', '--memory', '--dedup-max', '1.5'], /--dedup-max .*"1.5"/],
  [['serve', '--memory', '--no-check-values=false'], /^clonekv: --no-check-values takes no value/],
  [['get', 'k', '--history-max', '5'], /^clonekv: get does not take --history-max/],
  [['set', 'k', 'v', '--if-version', '-1'], /--if-version needs a value/],
  [['set', 'k', 'v', '--if-version=1.5'], /--if-version/],
  // A forwarder address that is not one: named as the flag it came from.
  [['get', 'k', '--server', 'tcp://*:5556'], /^clonekv: --server "tcp:\/\/\*:5556" is not a forwarder address: expected tcp:\/\/HOST:PORT/],
  [['get', 'k', '--server', 'tcp://127.0.0.1:65534'], /^clonekv: --server .* is not a forwarder address/],
  [['get', 'k', '--server', 'localhost:5556'], /^clonekv: --server "localhost:5556" is not a forwarder address/],
  [['--version', 'extra'], /--version takes no arguments/],
  [['--bogus'], /^clonekv: "--bogus" is not a command; try clonekv --help\n/],
  [['--server', 'tcp://127.0.0.1:5556', 'get', 'k'], /^clonekv: "--server" is not a command; options go after the command/],
];

test('usage errors exit 2 with a message on stderr', async () => {
  // Any case that got past its usage check would fail on this server rather than hang.
  const server = ['--server', `tcp://127.0.0.1:${await closedPort()}`, '--timeout', '500'];
  // As real processes: unknown command, missing argument, bad --ttl, invalid JSON with --json.
  const real = USAGE_ERRORS.slice(0, 4);
  const results = await Promise.all(real.map(([args]) => runCli([...args, ...server])));
  for (const [i, [args, stderr]] of real.entries()) {
    const r = results[i]!;
    assert.equal(r.code, 2, `clonekv ${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, stderr, `clonekv ${args.join(' ')}`);
    assert.match(r.stderr, /^clonekv: /);
    assert.equal(r.stdout, '');
  }
  // Every case, through the same entry point in-process (each child costs ~0.5 s of CPU).
  for (const [args, stderr] of USAGE_ERRORS) {
    const what = `clonekv ${args.join(' ')}`;
    const withServer = args[0] === 'serve' || args[0]!.startsWith('-') || args.includes('--server') ? args : [...args, ...server.slice(0, 2)];
    const r = await runInProcess(withServer);
    assert.equal(r.code, 2, `${what}: ${r.stderr}`);
    assert.match(r.stderr, stderr, what);
    assert.match(r.stderr, /^clonekv: [^\n]+\n$/, `${what}: one line (no usage dump, no stack)`);
    assert.equal(r.stdout, '', `${what}: nothing on stdout`);
  }
  // No command at all: the help on stdout, exit 2.
  const none = await runInProcess([]);
  assert.equal(none.code, 2);
  assert.match(none.stdout, /^Usage: clonekv <command>/m);
});

test('serve --history-max and --history-bytes bound the retained history; --dedup-max caps the remembered outcomes', async (t) => {
  const s = await serve(t, ['--history-max', '3', '--history-bytes', '1024', '--dedup-max', '1']);
  const writer = await readyPeer(t, s.endpoint, { presence: false });
  for (let i = 0; i < 5; i++) await writer.set('h/k', i);
  let stats = await writer.serverStats();
  assert.equal(stats.historySize, 3, 'five small updates, three kept (--history-max)');
  // One outcome remembered at a time, each forced out well within the default 60 s ttl.
  assert.equal(stats.dedupEvictions, 4, '--dedup-max 1');
  // Two updates of 800 bytes do not fit in 1024 bytes together: one is kept (--history-bytes).
  await writer.set('h/big1', 'x'.repeat(800));
  await writer.set('h/big2', 'y'.repeat(800));
  stats = await writer.serverStats();
  assert.equal(stats.historySize, 1, '--history-bytes 1024');
});

test('serve --dedup-ttl sets how long outcomes count as remembered; --no-check-values sequences a marked body as it is', async (t) => {
  const s = await serve(t, ['--dedup-max', '1', '--dedup-ttl', '1', '--no-check-values']);
  const writer = await readyPeer(t, s.endpoint, { presence: false });
  // As in the test above, but each outcome is past its 1 ms ttl when the next forces it out:
  // not an eviction that could let a retry apply twice.
  for (let i = 0; i < 3; i++) {
    await writer.set('t/k', i);
    const acked = Date.now();
    await waitFor('the outcome outlived --dedup-ttl', () => Date.now() > acked + 10);
  }
  assert.equal((await writer.serverStats()).dedupEvictions, 0, '--dedup-ttl 1');
  // An enc=msgpack body that does not decode (0xc1 is never used): refused by default
  // (test/forwarder-door.test.ts), taken as it is with --no-check-values.
  const { dealer, inbox } = rawDealer(t, s.endpoint, { clonekv: true });
  await dealer.send([Buffer.from('t/raw'), ZERO_SEQ, randomBytes(16), Buffer.from('enc=msgpack\n'), Buffer.from([0xc1])]);
  const ack = await inbox.next('the KVACK of the marked write');
  assert.equal(ack[0]!.toString(), 'KVACK');
  assert.equal(propMap(ack[3]!).get('status'), 'ok');
  assert.equal((await writer.serverStats()).malformedBy['value-encoding'], 0);
});

test('serve bound to every interface tells peers a host to connect to, never tcp://*', () => {
  for (const bound of ['tcp://*:5556', 'tcp://0.0.0.0:5556', 'tcp://[::]:5556']) assert.equal(connectAddress(bound), `tcp://${hostname()}:5556`);
  assert.equal(connectAddress('tcp://127.0.0.1:5556'), 'tcp://127.0.0.1:5556');
  assert.equal(connectAddress('tcp://10.1.2.3:7000'), 'tcp://10.1.2.3:7000');
});

test('a bug in clonekv itself prints its trace and says it is a bug; nothing else prints a stack', async () => {
  let stderr = '';
  const code = await run(['--version'], {
    out: () => {
      throw new TypeError('boom');
    },
    err: (x) => (stderr += x + '\n'),
    progress: false,
  });
  assert.equal(code, 1);
  assert.match(stderr, /^clonekv: internal error \(a bug in clonekv; please report it with this trace\): TypeError: boom\n\s+at /);
});

test('--help for every command exits 0 and prints its usage', async () => {
  const [main, setHelp] = await Promise.all([runCli(['--help']), runCli(['set', '--help'])]);
  assert.equal(main.code, 0, main.stderr);
  for (const c of COMMANDS) assert.match(main.stdout, new RegExp(`^  ${c}\\b`, 'm'), `lists ${c}`);
  assert.match(main.stdout, /Exit codes: 0 ok, 1 .*, 2 bad usage, 3 key not found/);
  assert.equal(setHelp.code, 0, setHelp.stderr);
  assert.match(setHelp.stdout, /^Usage: clonekv set KEY VALUE/);
  for (const c of COMMANDS) {
    for (const flag of ['--help', '-h']) {
      // The flag wins even next to arguments that would otherwise be a usage error.
      const r = await runInProcess([c, 'extra', 'args', flag]);
      assert.equal(r.code, 0, `${c} ${flag}: ${r.stderr}`);
      assert.match(r.stdout, new RegExp(`^Usage: clonekv ${c}\\b`), `${c} ${flag}`);
    }
  }
  const help = await runInProcess(['help']);
  assert.equal(help.code, 0);
  assert.equal(help.stdout, main.stdout);
  // The environment the CLI reads is named in the help.
  assert.match(main.stdout, /CLONEKV_SERVER/);
  assert.match(main.stdout, /CLONEKV_PROGRESS=1/);
  assert.match(main.stdout, /--version/);
});

test('--version and `clonekv version` print the version of package.json', async () => {
  const pkg = JSON.parse(await readFile(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
  const real = await runCli(['--version']);
  assert.equal(real.code, 0, real.stderr);
  assert.equal(real.stdout, `${pkg.version}\n`);
  for (const argv of [['version'], ['-V']]) {
    const r = await runInProcess(argv);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, `${pkg.version}\n`);
  }
});

test('an unreachable server exits 1 naming the endpoint and what to do, within --timeout', async () => {
  const endpoint = `tcp://127.0.0.1:${await closedPort()}`;
  // The two ways in: a reader waiting for its snapshot, and a writer waiting for its acknowledgement.
  const commands = [['get', 'k'], ['set', 'k', 'v'], ['watch', 'p/']];
  const results = await Promise.all(commands.map((args) => runCli([...args, '--server', endpoint, '--timeout', '500'])));
  for (const [i, r] of results.entries()) {
    const what = `clonekv ${commands[i]!.join(' ')}`;
    assert.equal(r.code, 1, `${what}: ${r.stderr}`);
    assert.ok(r.stderr.includes(endpoint), `${what} names the endpoint: ${r.stderr}`);
    assert.match(r.stderr, /within 500 ms/, `${what}: --timeout is honoured`);
    assert.match(r.stderr, /clonekv serve|forwarder is running/, `${what} says what to do: ${r.stderr}`);
    assert.doesNotMatch(r.stderr, /unexpected error|\n\s+at /, `${what}: no stack trace`);
  }
});

test('serve on a port in use exits 1 with a clear message; serve stops cleanly on SIGTERM', async (t) => {
  const s = await serve(t);
  const second = await runCli(['serve', '--memory', '--port', String(s.port)], {}, 10_000);
  assert.equal(second.code, 1, `second serve: ${second.stderr}`);
  assert.match(second.stderr, new RegExp(`${s.port}`));
  assert.match(second.stderr, /in use/i);
  assert.match(second.stderr, /--port/);
  assert.doesNotMatch(second.stderr, /unexpected error|\n\s+at /, 'no stack trace');
  // The first one kept serving.
  const p = await readyPeer(t, s.endpoint);
  await within('a write to the first serve', p.set('still', 'up'));
  const exit = exited(s.proc);
  s.proc.child.kill('SIGTERM');
  const [code, signal] = await within('serve to exit after SIGTERM', exit, 10_000);
  assert.equal(signal, null);
  assert.equal(code, 0);
});
