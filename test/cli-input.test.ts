/**
 * `clonekv set KEY -` and `clonekv set KEY --file F`: values too large for an argument (Linux
 * refuses a single argument over 128 KiB) come from stdin or a file, exactly as given.
 *
 * Topology: an in-process Forwarder on an ephemeral port triple; `clonekv set` children write
 * to it; an in-process Peer reads back what they wrote.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { CLI, forwarder, readyPeer } from './helpers.ts';

/** Runs `clonekv ARGS` with `input` on its stdin (nothing when undefined), to completion. */
async function runWithInput(args: string[], input?: string | Buffer, ms = 20_000): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  // The CLI may refuse before reading stdin: a write to a closed pipe is then expected.
  child.stdin.on('error', () => {});
  child.stdin.end(input);
  const timer = setTimeout(() => child.kill('SIGKILL'), ms);
  const [code] = (await once(child, 'exit')) as [number | null];
  clearTimeout(timer);
  return { code, stdout, stderr };
}

async function scratchDir(t: TestContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'clonekv-cli-input-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** A 300 KB text with newlines, tabs and multi-byte characters: over the 128 KiB argument limit. */
const BIG = Array.from({ length: 6000 }, (_, i) => `line ${i}\té ✓ ${'x'.repeat(30)}\n`).join('');

test('set KEY - stores stdin exactly, and --file FILE stores the file exactly, beyond the argument size limit', async (t) => {
  assert.ok(Buffer.byteLength(BIG) > 256 * 1024, 'the value is over the argument limit');
  const fwd = await forwarder(t);
  const dir = await scratchDir(t);
  const file = join(dir, 'value.txt');
  await writeFile(file, BIG);
  const [fromStdin, fromFile] = await Promise.all([
    runWithInput(['set', 'in/stdin', '-', '--server', fwd.endpoint], BIG),
    runWithInput(['set', 'in/file', '--file', file, '--server', fwd.endpoint]),
  ]);
  assert.equal(fromStdin.code, 0, fromStdin.stderr);
  assert.equal(fromFile.code, 0, fromFile.stderr);
  const reader = await readyPeer(t, fwd.endpoint, { subtree: 'in/' });
  assert.equal(reader.get('in/stdin'), BIG, 'stdin stored as it was, trailing newline included');
  assert.equal(reader.get('in/file'), BIG);
  assert.equal(reader.version('in/stdin'), Number(fromStdin.stdout.trim()), 'prints the sequence');
  assert.equal(reader.version('in/file'), Number(fromFile.stdout.trim()));
});

test('set KEY - --json and --file --json parse the input as JSON', async (t) => {
  const fwd = await forwarder(t);
  const dir = await scratchDir(t);
  const file = join(dir, 'value.json');
  await writeFile(file, JSON.stringify({ from: 'file', list: [1, 2, 3] }, null, 2) + '\n');
  const [fromStdin, fromFile] = await Promise.all([
    runWithInput(['set', 'j/stdin', '-', '--json', '--server', fwd.endpoint], '{"from": "stdin", "n": 42}\n'),
    runWithInput(['set', 'j/file', '--json', '--file', file, '--server', fwd.endpoint]),
  ]);
  assert.equal(fromStdin.code, 0, fromStdin.stderr);
  assert.equal(fromFile.code, 0, fromFile.stderr);
  const reader = await readyPeer(t, fwd.endpoint, { subtree: 'j/' });
  assert.deepEqual(reader.get('j/stdin'), { from: 'stdin', n: 42 });
  assert.deepEqual(reader.get('j/file'), { from: 'file', list: [1, 2, 3] });
});

test('a value the forwarder is configured to take is not refused by the CLI, and one over its limit names the limit', async (t) => {
  // 1.5 MB: over the library's default 1 MiB, under this forwarder's 4 MiB.
  const fwd = await forwarder(t, { maxValueBytes: 4 * 1024 * 1024 });
  const small = await forwarder(t);
  const value = 'v'.repeat(1_500_000);
  const [ok, over] = await Promise.all([
    runWithInput(['set', 'large', '-', '--server', fwd.endpoint], value),
    runWithInput(['set', 'large', '-', '--server', small.endpoint], value),
  ]);
  assert.equal(ok.code, 0, ok.stderr);
  const reader = await readyPeer(t, fwd.endpoint, { subtree: 'large' });
  assert.equal((reader.get('large') as string).length, value.length);
  assert.equal(over.code, 1, over.stderr);
  assert.match(over.stderr, /over the limit of 1048576/);
  assert.ok(over.stderr.includes(small.endpoint), `names the forwarder: ${over.stderr}`);
  assert.match(over.stderr, /--max-value-bytes/, 'says how the limit is raised');
  assert.equal(over.stderr.trim().split('\n').length, 1, 'one line');
});

test('input errors exit 2 with one line naming the file (nothing is sent)', async (t) => {
  const dir = await scratchDir(t);
  const badJson = join(dir, 'bad.json');
  const binary = join(dir, 'binary.bin');
  const missing = join(dir, 'missing.txt');
  await writeFile(badJson, '{"open": ');
  await writeFile(binary, Buffer.from([0xff, 0xfe, 0x00, 0xc3]));
  // No forwarder listens there: a case that got past its check would time out (exit 1), not exit 2.
  const server = ['--server', 'tcp://127.0.0.1:1', '--timeout', '2000'];
  const cases: Array<[args: string[], input: string | undefined, stderr: RegExp]> = [
    [['set', 'k', '--file', missing], undefined, new RegExp(`${missing.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: no such file`)],
    [['set', 'k', '--file', badJson, '--json'], undefined, /bad\.json is not valid JSON/],
    [['set', 'k', '--file', binary], undefined, /binary\.bin is not UTF-8 text/],
    [['set', 'k', '-', '--json'], '{nope', /in stdin is not valid JSON/],
    [['set', 'k', 'value', '--file', badJson], undefined, /as VALUE, - or --file, not two of them/],
    [['set', 'k', '--file', dir], undefined, /it is a directory/],
  ];
  const results = await Promise.all(cases.map(([args, input]) => runWithInput([...args, ...server], input)));
  for (const [i, [args, , stderr]] of cases.entries()) {
    const r = results[i]!;
    const what = `clonekv ${args.join(' ')}`;
    assert.equal(r.code, 2, `${what}: ${r.stderr}`);
    assert.match(r.stderr, stderr, what);
    assert.match(r.stderr, /^clonekv: [^\n]*\n$/, `${what}: one line`);
    assert.equal(r.stdout, '');
  }
});
