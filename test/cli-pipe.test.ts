/**
 * A closed pipe ends a command quietly, as Unix tools do: `clonekv dump | head`,
 * `clonekv watch | head -1`, `clonekv stats | head`. The command stops, prints nothing on
 * stderr and exits 0 (the reader chose to stop reading).
 *
 * Topology: an in-process Forwarder on an ephemeral port triple, seeded in-process; the CLI in
 * a child process whose stdout is a real pipe, whose reading end this test closes early; for
 * dump, also a real shell pipeline into `head -1`.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { once } from 'node:events';
import { test, type TestContext } from 'node:test';
import { CLI, forwarder, readyPeer, within } from './helpers.ts';

interface Piped {
  readonly child: ChildProcessWithoutNullStreams;
  readonly stderr: () => string;
  readonly exit: Promise<[number | null, NodeJS.Signals | null]>;
}

/** Spawns `clonekv ARGS` with stdout and stderr on pipes (killed after the test if alive). */
function piped(t: TestContext, args: string[]): Piped {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] }) as unknown as ChildProcessWithoutNullStreams;
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const exit = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
  t.after(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exit;
    }
  });
  return { child, stderr: () => stderr, exit };
}

/** Resolves with the first chunk the child writes on stdout. */
async function firstOutput(p: Piped): Promise<string> {
  const [chunk] = (await within('the first output', once(p.child.stdout, 'data'), 15_000)) as [Buffer];
  return chunk.toString('utf8');
}

function assertQuiet(what: string, p: Piped, [code, signal]: [number | null, NodeJS.Signals | null]): void {
  assert.equal(signal, null, `${what}: not killed`);
  assert.equal(p.stderr(), '', `${what}: nothing on stderr (no EPIPE, no stack trace)`);
  assert.equal(code, 0, `${what}: exits 0`);
}

test('dump stops quietly when the reader closes the pipe (more output than a pipe buffers)', async (t) => {
  const fwd = await forwarder(t);
  // 20,000 lines of ~60 bytes: over a megabyte, far beyond a pipe's buffer (64 KiB on Linux).
  await fwd.load(Array.from({ length: 20_000 }, (_, i) => [`d/${String(i).padStart(5, '0')}`, 'x'.repeat(50)] as const));
  const p = piped(t, ['dump', 'd/', '--server', fwd.endpoint]);
  assert.match(await firstOutput(p), /^d\/\d{5}\tx+\n/);
  p.child.stdout.destroy(); // the reading end: every later write fails with EPIPE
  assertQuiet('dump', p, await within('dump to exit once its reader is gone', p.exit, 10_000));
});

test('dump | head -1 in a real shell pipeline: one line, clean stderr, status 0', async (t) => {
  const fwd = await forwarder(t);
  await fwd.load(Array.from({ length: 20_000 }, (_, i) => [`h/${String(i).padStart(5, '0')}`, 'y'.repeat(50)] as const));
  const script = `"${process.execPath}" "${CLI}" dump h/ --server ${fwd.endpoint} | head -1; echo "status=\${PIPESTATUS[0]}" >&2`;
  const sh = spawn('bash', ['-c', script], { stdio: ['ignore', 'pipe', 'pipe'] });
  t.after(() => {
    if (sh.exitCode === null) sh.kill('SIGKILL');
  });
  let out = '';
  let err = '';
  sh.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
  sh.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
  await within('the pipeline to end', once(sh, 'exit'), 15_000);
  assert.equal(out, `h/00000\t${'y'.repeat(50)}\n`);
  assert.equal(err, 'status=0\n', 'no EPIPE message or stack trace, and clonekv exited 0');
});

test('watch stops quietly when the reader closes the pipe, at the next change', async (t) => {
  const fwd = await forwarder(t);
  const writer = await readyPeer(t, fwd.endpoint);
  await writer.set('w/first', 1);
  const p = piped(t, ['watch', 'w/', '--server', fwd.endpoint]);
  assert.equal(await firstOutput(p), 'put w/first 1\n');
  p.child.stdout.destroy();
  // The watch learns the pipe is closed when it next prints: cause a change.
  await writer.set('w/second', 2);
  assertQuiet('watch', p, await within('watch to exit once its reader is gone', p.exit, 10_000));
});

test('stats exits quietly when its stdout is closed before it prints', async (t) => {
  const fwd = await forwarder(t);
  const p = piped(t, ['stats', '--server', fwd.endpoint]);
  p.child.stdout.destroy();
  assertQuiet('stats', p, await within('stats to exit', p.exit, 10_000));
});
