/**
 * CURVE from the command line: `keygen --curve` writes a 0600 key file and prints the public
 * key; `serve --curve FILE --curve-allow FILE` admits the listed client; `set`, `get` and
 * `stats` work with --curve-server-key and --curve-key (or their environment variables); a
 * client without an allowed key gets nothing; `--sealed PREFIX=FILE` seals and opens values.
 *
 * Topology: `clonekv serve` in a child process, the CLI in child processes.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { runCli, spawnCli } from './helpers.ts';

test('keygen --curve, serve --curve --curve-allow, and clients with and without an allowed key', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'clonekv-curve-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const serverFile = join(dir, 'server.key');
  const clientFile = join(dir, 'client.key');
  const allowFile = join(dir, 'allow');

  const [server, client] = await Promise.all([runCli(['keygen', '--curve', '--out', serverFile]), runCli(['keygen', '--curve', '--out', clientFile])]);
  assert.equal(server.code, 0, server.stderr);
  assert.equal(client.code, 0, client.stderr);
  assert.equal(statSync(serverFile).mode & 0o777, 0o600);
  const serverKey = server.stdout.trim();
  assert.equal(serverKey, JSON.parse(readFileSync(serverFile, 'utf8')).publicKey);
  const again = await runCli(['keygen', '--curve', '--out', serverFile]);
  assert.equal(again.code, 2, 'an existing key file is never overwritten');
  writeFileSync(allowFile, `# the one client\n${client.stdout.trim()}\n`);

  const fwd = spawnCli(t, ['serve', '--memory', '--port', '0', '--json', '--curve', serverFile, '--curve-allow', allowFile]);
  const started = JSON.parse(await fwd.line(/^\{/).catch((e) => { throw new Error(`${e.message} stdout=${fwd.stdout()} stderr=${fwd.stderr()} exit=${fwd.child.exitCode}`); })) as { endpoint: string; curvePublicKey: string };
  assert.equal(started.curvePublicKey, serverKey);
  const at = started.endpoint;

  const set = await runCli(['set', 'cfg/a', 'hello', '--server', at, '--curve-server-key', serverKey, '--curve-key', clientFile]);
  assert.equal(set.code, 0, set.stderr);
  const get = await runCli(['get', 'cfg/a', '--server', at], { CLONEKV_CURVE_SERVER_KEY: serverKey, CLONEKV_CURVE_KEY: clientFile });
  assert.equal(get.code, 0, get.stderr);
  assert.equal(get.stdout.trim(), 'hello');

  // No allowed key (a fresh one), and no CURVE at all: nothing read, nothing written.
  const [stranger, plain] = await Promise.all([
    runCli(['set', 'cfg/evil', 'x', '--server', at, '--curve-server-key', serverKey, '--timeout', '1500']),
    runCli(['get', 'cfg/a', '--server', at, '--timeout', '1500']),
  ]);
  assert.equal(stranger.code, 1, stranger.stderr);
  assert.equal(plain.code, 1, plain.stderr);
  assert.equal(plain.stdout, '');

  const stats = await runCli(['stats', '--json', '--server', at, '--curve-server-key', serverKey, '--curve-key', clientFile]);
  assert.equal(stats.code, 0, stats.stderr);
  const s = JSON.parse(stats.stdout) as { keys: number; curve: { allowList: number; refused: number } };
  assert.equal(s.curve.allowList, 1);
  assert.ok(s.curve.refused > 0);

  // Sealed subtrees from the command line: --sealed PREFIX=FILE (base64 secret), or CLONEKV_SEALED.
  const secretFile = join(dir, 'vault.secret');
  writeFileSync(secretFile, `${randomBytes(32).toString('base64')}\n`);
  const env = { CLONEKV_CURVE_SERVER_KEY: serverKey, CLONEKV_CURVE_KEY: clientFile };
  const sealedSet = await runCli(['set', 'vault/pw', 's3cret', '--server', at, '--sealed', `vault/=${secretFile}`], env);
  assert.equal(sealedSet.code, 0, sealedSet.stderr);
  const [opened, unopened] = await Promise.all([
    runCli(['get', 'vault/pw', '--server', at], { ...env, CLONEKV_SEALED: `vault/=${secretFile}` }),
    runCli(['get', 'vault/pw', '--server', at], env),
  ]);
  assert.equal(opened.stdout.trim(), 's3cret', opened.stderr);
  assert.match(unopened.stdout, /"sealed":true/);
  assert.equal(unopened.stdout.includes('s3cret'), false);

  const usage = await runCli(['get', 'cfg/a', '--server', at, '--curve-key', clientFile]);
  assert.equal(usage.code, 2);
  assert.match(usage.stderr, /--curve-key .*needs --curve-server-key/);
});
