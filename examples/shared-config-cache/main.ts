/**
 * Shared configuration cache: a service embeds a Peer on its own subtree, reads its settings
 * locally and synchronously on every request, and reacts to changes an operator makes (a feature
 * flag flip, a database url change, a delete) through `watch`.
 *
 *   operator Peer ──set/delete──► Forwarder ──updates──► service Peer (subtree config/service-a/)
 *
 * Run: npx tsx examples/shared-config-cache/main.ts   (uses CLONEKV_SERVER if set, otherwise
 * starts its own forwarder on a free port). Exits 0 when every check passed.
 */
import { Forwarder, Peer } from '../../src/index.ts';
import { check, until } from '../support.ts';

const HARD_TIMEOUT_MS = 10_000;
setTimeout(() => {
  console.error(`shared-config-cache: FAILED, still running after ${HARD_TIMEOUT_MS} ms`);
  process.exit(1);
}, HARD_TIMEOUT_MS).unref();

const PREFIX = 'config/service-a/';
const FLAG = `${PREFIX}features/new-checkout`;
const DB_URL = `${PREFIX}db/url`;
const BANNER = `${PREFIX}banner`;



/** A service whose configuration lives in a clonekv subtree. */
class Service {
  readonly #config: Peer;
  readonly #stop = new AbortController();
  readonly #watching: Promise<void>;
  /** Database urls this service has connected to, in order. */
  readonly connections: string[] = [];
  /** What the service did about each change, in order. */
  readonly reactions: string[] = [];

  private constructor(config: Peer) {
    this.#config = config;
    this.#connect(this.#setting(DB_URL, 'postgres://localhost:5432/dev'));
    this.#watching = this.#watch();
  }

  /** Joins the forwarder and loads the current configuration before serving. */
  static async start(server: string): Promise<Service> {
    const config = new Peer({ server, subtree: PREFIX, name: 'service-a' });
    await config.ready();
    return new Service(config);
  }

  /** The local copy of the configuration (for the checks). */
  get config(): Peer {
    return this.#config;
  }

  /** Handles one request: reads settings locally, without a network round trip. */
  handle(): string {
    const flow = this.#setting(FLAG, false) ? 'new checkout' : 'legacy checkout';
    const banner = this.#setting<string | undefined>(BANNER, undefined);
    return banner === undefined ? flow : `${flow} [${banner}]`;
  }

  #setting<T>(key: string, fallback: T): T {
    return this.#config.has(key) ? this.#config.get<T>(key)! : fallback;
  }

  #connect(url: string): void {
    this.connections.push(url);
    console.log(`  service: connected to ${url}`);
  }

  async #watch(): Promise<void> {
    // updatesOnly: the current values were read at start; only changes matter from here on.
    for await (const change of this.#config.watch(PREFIX, { updatesOnly: true, signal: this.#stop.signal })) {
      let reaction: string;
      if (change.key === DB_URL && change.operation === 'put') {
        this.#connect(String(change.value));
        reaction = `reconnected to ${String(change.value)}`;
      } else if (change.key === FLAG) {
        reaction = `feature new-checkout ${String(change.previous)} -> ${String(change.value)}`;
      } else if (change.operation === 'delete') {
        reaction = `${change.key.slice(PREFIX.length)} removed (${change.reason ?? 'deleted'})`;
      } else {
        reaction = `${change.key.slice(PREFIX.length)} = ${JSON.stringify(change.value)}`;
      }
      this.reactions.push(reaction);
      console.log(`  service: ${reaction} (version ${change.version})`);
    }
  }

  async close(): Promise<void> {
    this.#stop.abort();
    await this.#watching;
    await this.#config.close();
  }
}

async function main(): Promise<void> {
  const external = process.env.CLONEKV_SERVER;
  const fwd = external ? undefined : await Forwarder.start({ port: 0 });
  const server = external ?? fwd!.endpoint;
  console.log(`shared-config-cache: forwarder at ${server}${external ? ' (CLONEKV_SERVER)' : ' (in-process)'}`);
  const operator = new Peer({ server, subtree: PREFIX, name: 'operator' });
  let service: Service | undefined;
  try {
    await operator.ready();
    console.log('operator: seeding the configuration');
    await Promise.all([
      operator.set(DB_URL, 'postgres://db-1:5432/orders'),
      operator.set(FLAG, false),
      operator.set(`${PREFIX}http/timeout-ms`, 2500),
      operator.set(BANNER, 'maintenance on Sunday 02:00 UTC'),
      operator.set('config/service-b/db/url', 'postgres://db-9:5432/billing'),
    ]);

    service = await Service.start(server);
    const s = service;
    console.log(`service: started; request -> ${s.handle()}`);
    check(s.handle() === 'legacy checkout [maintenance on Sunday 02:00 UTC]', 'the service reads its settings locally at once');
    check(s.config.get(`${PREFIX}http/timeout-ms`) === 2500, 'values keep their type (a number stays a number)');
    check(!s.config.has('config/service-b/db/url'), "the service holds only its own subtree, not service-b's");
    check(s.connections.length === 1 && s.connections[0] === 'postgres://db-1:5432/orders', 'connected to the configured database');

    console.log('operator: flipping the new-checkout flag');
    await operator.set(FLAG, true);
    await until('the service to see the flag', () => s.reactions.length >= 1);
    check(s.reactions[0] === 'feature new-checkout false -> true', 'the watch reported the flip with its previous value');
    check(s.handle().startsWith('new checkout'), 'the next request takes the new checkout flow');

    console.log('operator: moving the database');
    await operator.set(DB_URL, 'postgres://db-2:5432/orders');
    await until('the service to reconnect', () => s.reactions.length >= 2);
    check(s.connections.join(' ') === 'postgres://db-1:5432/orders postgres://db-2:5432/orders', 'the service reconnected once, to the new url');

    console.log('operator: removing the banner');
    await operator.delete(BANNER);
    await until('the service to see the delete', () => s.reactions.length >= 3);
    check(s.reactions[2] === 'banner removed (deleted)', 'the watch reported the delete');
    check(s.handle() === 'new checkout', 'requests no longer show the banner');

    const mine = (p: Peer): string => JSON.stringify([...p.entries(PREFIX)].map((e) => [e.key, e.value, e.version]).sort());
    check(mine(s.config) === mine(operator), "the service's copy equals the operator's (keys, values, versions)");
    check(s.reactions.length === 3, 'exactly three reactions, one per change');
    console.log('shared-config-cache: all checks passed');
  } finally {
    await service?.close();
    await operator.close();
    await fwd?.close();
  }
}

main().catch((err: unknown) => {
  console.error(`shared-config-cache: FAILED: ${err instanceof Error ? err.message : String(err)}`);
  process.exitCode = 1;
});
