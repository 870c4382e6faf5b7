/**
 * What a peer learns of its own registration at the forwarder. A clonekv forwarder answers the
 * beat that registers a peer id (its first one, or the first after the peer was purged for
 * missing beats) with KVPRESENT, carrying `owner=<id>` and `since=<ms>`. The first `since` is
 * remembered; a different one later means the forwarder purged this peer meanwhile, and with it
 * every key the peer owned.
 *
 * @module
 */
import { Prop } from '../protocol/commands.ts';
import { PropertiesError, PropertyView } from '../protocol/properties.ts';
import type { OwnershipLostInfo } from '../types.ts';

/** What one KVPRESENT meant. */
export type PresentOutcome =
  /** Not for this peer, or the registration already known: nothing to do. */
  | { readonly kind: 'none' }
  /** Not a well-formed KVPRESENT: count it and drop it. */
  | { readonly kind: 'malformed' }
  /** The peer had been purged: tell the application. */
  | { readonly kind: 'lost'; readonly info: OwnershipLostInfo };

const NONE: PresentOutcome = { kind: 'none' };
const MALFORMED: PresentOutcome = { kind: 'malformed' };

/** The registration times a peer has been told, for one peer id. */
export class Registration {
  readonly #id: string;
  #since: number | undefined;

  /** @param id - this peer's id (the `owner` a KVPRESENT must name) */
  constructor(id: string) {
    this.#id = id;
  }

  /** When the forwarder last registered this peer (ms, its clock), once told. */
  get since(): number | undefined {
    return this.#since;
  }

  /** Reads a KVPRESENT message (five frames: command, sequence, uuid, properties, body). */
  onPresent(frames: Buffer[]): PresentOutcome {
    if (frames.length !== 5) return MALFORMED;
    let owner: string | undefined;
    let sinceText: string | undefined;
    try {
      const props = new PropertyView(frames[3]!);
      owner = props.get(Prop.Owner);
      sinceText = props.get(Prop.Since);
    } catch (err) {
      if (!(err instanceof PropertiesError)) throw err;
      return MALFORMED;
    }
    if (owner === undefined || sinceText === undefined || !/^\d{1,15}$/.test(sinceText)) return MALFORMED;
    if (owner !== this.#id) return NONE; // another peer's (a shared DEALER never happens; be safe)
    const since = Number(sinceText);
    const previousSince = this.#since;
    this.#since = since;
    if (previousSince === undefined || previousSince === since) return NONE;
    return { kind: 'lost', info: { since, previousSince } };
  }
}
