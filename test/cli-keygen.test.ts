/**
 * The CLI's key and policy files (issue 10): keygen never overwrites a key; a key file with
 * loose permissions and a bad policy file are refused at once, naming the file.
 *
 * Topology: `clonekv keygen`, `set` and `serve` as child processes; `set` is refused before it
 * connects anywhere, `serve` before it binds.
 */
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { loadIdentity } from '../src/index.ts';
import { runCli } from './helpers.ts';

test('an identity file with loose permissions, or a bad policy file at start, is refused naming the file', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'clonekv-cli-sec-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const keyFile = join(dir, 'id.json');
  const gen = await runCli(['keygen', '--out', keyFile, '--json']);
  assert.equal(gen.code, 0);
  const { publicKey } = JSON.parse(gen.stdout) as { publicKey: string };
  // Never overwritten.
  const again = await runCli(['keygen', '--out', keyFile]);
  assert.notEqual(again.code, 0);
  assert.ok(again.stderr.includes(keyFile) && /exists already/.test(again.stderr), again.stderr);
  assert.equal(loadIdentity(keyFile).id, publicKey);
  chmodSync(keyFile, 0o644);
  const loose = await runCli(['set', 'k', 'v', '--identity', keyFile, '--server', 'tcp://127.0.0.1:9', '--timeout', '100']);
  assert.equal(loose.code, 2);
  assert.ok(loose.stderr.includes(keyFile) && /too open/.test(loose.stderr), loose.stderr);
  const badPolicy = join(dir, 'bad.yaml');
  writeFileSync(badPolicy, 'writers: nope\n');
  const serve = await runCli(['serve', '--memory', '--port', '0', '--policy', badPolicy]);
  assert.equal(serve.code, 2);
  assert.ok(serve.stderr.includes(badPolicy) && /must be a list/.test(serve.stderr), serve.stderr);
});
