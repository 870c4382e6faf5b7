/**
 * Identities (key files, public key form), the signature format (standard Ed25519: tweetnacl
 * verifies what Node signs) and policy files, good and bad.
 */
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import nacl from 'tweetnacl';
import { generateIdentity, loadIdentity, parsePublicKey, Policy, saveIdentity } from '../src/index.ts';
import { PropertyView, encodeProperties } from '../src/protocol/properties.ts';
import { checkUpdate, checkWrite, signedPayload, signWrite } from '../src/security/signature.ts';

function tmp(t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'clonekv-id-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function code(err: unknown): string | undefined {
  return (err as { code?: string }).code;
}

test('an identity saves with mode 0600 in tweetnacl format and loads back', (t) => {
  const dir = tmp(t);
  const file = join(dir, 'id.json');
  const id = generateIdentity();
  saveIdentity(id, file);
  assert.equal(statSync(file).mode & 0o777, 0o600);
  const doc = JSON.parse(readFileSync(file, 'utf8')) as { type: string; secretKey: string; publicKey: string };
  assert.equal(doc.type, 'clonekv-ed25519');
  const sk = Buffer.from(doc.secretKey, 'base64');
  assert.equal(sk.length, 64);
  // tweetnacl's key format: the same key pair comes back from the 64-byte secret key.
  assert.deepEqual(Buffer.from(nacl.sign.keyPair.fromSecretKey(sk).publicKey), Buffer.from(id.publicKey));
  assert.match(id.id, /^ed25519:[A-Za-z0-9_-]{43}$/);
  assert.equal(doc.publicKey, id.id);
  const back = loadIdentity(file);
  assert.equal(back.id, id.id);
  assert.deepEqual(Buffer.from(parsePublicKey(id.id)!), Buffer.from(id.publicKey));
  assert.deepEqual(Buffer.from(parsePublicKey(id.signer)!), Buffer.from(id.publicKey));
  assert.equal(parsePublicKey('ed25519:short'), undefined);
  // Never overwritten.
  assert.throws(() => saveIdentity(generateIdentity(), file), (e) => code(e) === 'CLONEKV_INVALID_OPTION' && /exists already/.test((e as Error).message));
  assert.equal(loadIdentity(file).id, id.id);
});

test('a key file with loose permissions or a bad format is refused, naming the file', (t) => {
  const dir = tmp(t);
  const file = join(dir, 'id.json');
  saveIdentity(generateIdentity(), file);
  chmodSync(file, 0o644);
  assert.throws(() => loadIdentity(file), (e) => code(e) === 'CLONEKV_INVALID_OPTION' && (e as Error).message.includes(file) && /too open/.test((e as Error).message));
  const cases: Array<[string, RegExp]> = [
    ['not json', /not a clonekv key file/],
    ['{"type":"other","secretKey":"AAAA"}', /not a clonekv key file/],
    ['{"type":"clonekv-ed25519","secretKey":"!!!"}', /not base64/],
    [`{"type":"clonekv-ed25519","secretKey":"${Buffer.alloc(10).toString('base64')}"}`, /64 bytes/],
    // A secret key whose second half is not its seed's public key.
    [`{"type":"clonekv-ed25519","secretKey":"${Buffer.concat([Buffer.from(generateIdentity().secretKey).subarray(0, 32), Buffer.from(generateIdentity().publicKey)]).toString('base64')}"}`, /inconsistent/],
    [`{"type":"clonekv-ed25519","secretKey":"${Buffer.from(generateIdentity().secretKey).toString('base64')}","publicKey":"${generateIdentity().id}"}`, /does not match/],
  ];
  for (const [i, [text, why]] of cases.entries()) {
    const f = join(dir, `bad${i}.json`);
    writeFileSync(f, text, { mode: 0o600 });
    assert.throws(() => loadIdentity(f), (e) => code(e) === 'CLONEKV_INVALID_OPTION' && (e as Error).message.includes(f) && why.test((e as Error).message), `case ${i}`);
  }
  assert.throws(() => loadIdentity(join(dir, 'missing.json')), (e) => code(e) === 'CLONEKV_INVALID_OPTION' && /missing\.json/.test((e as Error).message));
});

test('signatures are standard Ed25519 over a domain-separated payload covering key, value, uuid, ttl, owner, ts', () => {
  const id = generateIdentity();
  const key = Buffer.from('config/a');
  const uuid = Buffer.alloc(16, 7);
  const body = Buffer.from('value');
  const props: Array<[string, string]> = [['enc', 'msgpack'], ['ttl', '5'], ['owner', 'abcd']];
  signWrite(id, key, uuid, body, props, 1_700_000_000_000);
  const view = new PropertyView(encodeProperties(props));
  const sig = Buffer.from(view.get('sig')!, 'base64url');
  const payload = signedPayload(key, uuid, body, (n) => view.get(n));
  assert.ok(payload.subarray(0, 24).toString('latin1').startsWith('clonekv signed write v1'));
  // tweetnacl verifies what Node signed: both read the same keys and signatures.
  assert.ok(nacl.sign.detached.verify(payload, sig, id.publicKey));
  const policy = Policy.parse(`writers:\n  - key: ${id.id}\n    prefixes: [config/]\n`);
  assert.equal(checkWrite(policy, key, uuid, body, view), undefined);
  // Each covered field changed: the signature no longer holds.
  const changed = (name: string, value: string): PropertyView => new PropertyView(encodeProperties(props.map(([n, v]) => [n, n === name ? value : v])));
  for (const [name, value] of [['ttl', '6'], ['owner', 'abce'], ['ts', '1700000000001'], ['enc', 'raw']] as const) {
    assert.equal(checkWrite(policy, key, uuid, body, changed(name, value))?.reason, 'bad-signature', name);
  }
  assert.equal(checkWrite(policy, key, uuid, Buffer.from('valuf'), view)?.reason, 'bad-signature');
  assert.equal(checkWrite(policy, key, Buffer.alloc(16, 8), body, view)?.reason, 'bad-signature');
  // Another key under the same prefix: the key is covered too.
  assert.equal(checkWrite(policy, Buffer.from('config/b'), uuid, body, view)?.reason, 'bad-signature');
  // Outside the identity's prefixes: refused before any signature check, naming key and identity.
  const refusal = checkWrite(policy, Buffer.from('secret/a'), uuid, body, view);
  assert.equal(refusal?.reason, 'not-allowed');
  assert.match(refusal!.message, new RegExp(`identity ${id.id} may not write "secret/a"`));
  assert.equal(checkWrite(policy, key, uuid, body, new PropertyView(encodeProperties([['enc', 'msgpack']])))?.reason, 'unsigned');
  // The forwarder's own deletes (expiry, purge) and presence keys pass a peer's check unsigned.
  assert.equal(checkUpdate(policy, key, uuid, Buffer.alloc(0), new PropertyView(encodeProperties([['reason', 'expired']]))), undefined);
  assert.equal(checkUpdate(policy, Buffer.from('$peers/ab'), uuid, body, new PropertyView(encodeProperties([]))), undefined);
  assert.equal(checkUpdate(policy, key, uuid, Buffer.alloc(0), new PropertyView(encodeProperties([])))?.reason, 'unsigned');
});

test('policy files: YAML and JSON read the same; bad ones are refused naming the file and the entry', (t) => {
  const dir = tmp(t);
  const a = generateIdentity();
  const yamlFile = join(dir, 'p.yaml');
  writeFileSync(yamlFile, `# who may write what\nwriters:\n  - name: deploy\n    key: ${a.id}\n    prefixes: ["config/", "flags/"]\n`);
  const jsonFile = join(dir, 'p.json');
  writeFileSync(jsonFile, JSON.stringify({ writers: [{ name: 'deploy', key: a.id, prefixes: ['config/', 'flags/'] }] }));
  for (const f of [yamlFile, jsonFile]) {
    const p = Policy.load(f);
    assert.equal(p.file, f);
    const w = p.writer(a.signer)!;
    assert.equal(w.label, `deploy (${a.id})`);
    assert.ok(w.mayWrite(Buffer.from('config/x')));
    assert.ok(w.mayWrite(Buffer.from('flags/')));
    assert.ok(!w.mayWrite(Buffer.from('config')));
    assert.ok(!w.mayWrite(Buffer.from('other/x')));
    assert.equal(p.writer(generateIdentity().signer), undefined);
  }
  assert.ok(Policy.parse(`writers:\n  - key: ${a.id}\n    prefixes: [""]\n`).writer(a.signer)!.mayWrite(Buffer.from('anything')));
  assert.equal(Policy.parse('writers: []\n').writers.length, 0);
  const bad: Array<[string, RegExp]> = [
    ['writers: [\n', /not valid YAML/],
    ['- 1\n', /mapping with a "writers" list/],
    ['writer: []\n', /unknown field "writer"/],
    ['writers: 3\n', /must be a list/],
    ['writers:\n  - key: ed25519:nope\n    prefixes: [a/]\n', /writers\[0\]: "key" must be a public key/],
    [`writers:\n  - key: ${a.id}\n    prefixes: a/\n`, /writers\[0\]: "prefixes" must be a list/],
    [`writers:\n  - key: ${a.id}\n    prefixes: [a/]\n    extra: 1\n`, /writers\[0\]: unknown field "extra"/],
    [`writers:\n  - key: ${a.id}\n    prefixes: [a/]\n  - key: ${a.id}\n    prefixes: [b/]\n`, /writers\[1\]: key .* is named twice/],
  ];
  for (const [i, [text, why]] of bad.entries()) {
    const f = join(dir, `bad${i}.yaml`);
    writeFileSync(f, text);
    assert.throws(() => Policy.load(f), (e) => code(e) === 'CLONEKV_INVALID_OPTION' && (e as Error).message.includes(f) && why.test((e as Error).message), `case ${i}: ${text}`);
  }
  assert.throws(() => Policy.load(join(dir, 'none.yaml')), (e) => code(e) === 'CLONEKV_INVALID_OPTION' && /none\.yaml: cannot be read/.test((e as Error).message));
});
