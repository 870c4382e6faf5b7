/**
 * Terms and their lineage. Each time a member of a pair becomes active it takes a new term,
 * higher than any it knows, and notes the first sequence it will assign: the lineage is the list
 * of `[term, first sequence]`, oldest first, and a follower adopts its active's. Two logs agree up
 * to a sequence exactly when they were written by the same terms up to there, which is what
 * decides whether a peer or a backup may catch up by difference (a delta) or needs everything.
 * No I/O.
 *
 * @module
 */

/** `[term, first sequence of that term]`, oldest first. */
export type Lineage = ReadonlyArray<readonly [term: number, firstSeq: number]>;

/** The lineage after `term` starts at `firstSeq` (terms past it, never followed, are dropped). */
export function extendLineage(lineage: Lineage, term: number, firstSeq: number): Lineage {
  const kept = lineage.filter(([t, f]) => t < term && f <= firstSeq);
  return [...kept, [term, firstSeq]];
}

/** The term that wrote sequence `seq` in `lineage` (0 if none: before any term). */
export function termAt(lineage: Lineage, seq: number): number {
  let term = 0;
  for (const [t, f] of lineage) if (f <= seq) term = t;
  return term;
}

/**
 * Whether a log that knew term `knownTerm` (`undefined`: no term given) and holds everything up
 * to `since` agrees with this server's (term `current`, `lineage`) up to `since`:
 * - the same term: yes;
 * - an older term this server followed: only up to the first sequence of the term after it
 *   (later updates of that older term may be ones this server never had);
 * - a newer or unknown term: no;
 * - no term given: only if `since` is before the current term began.
 */
export function agreesUpTo(lineage: Lineage, current: number, since: number, knownTerm: number | undefined): boolean {
  if (knownTerm === current) return true;
  if (knownTerm === undefined) {
    const first = lineage.find(([t]) => t === current)?.[1];
    return first === undefined || since < first;
  }
  if (knownTerm > current) return false;
  const i = lineage.findIndex(([t]) => t === knownTerm);
  if (i < 0) return false;
  const next = lineage[i + 1];
  return next === undefined || since < next[1];
}

/**
 * Whether a follower whose lineage is `theirs` and that holds everything up to `since` agrees
 * with the active's (`ours`, term `current`) up to `since`: the term that wrote its last update
 * must be one the active followed, started at the same sequence.
 */
export function followerAgrees(ours: Lineage, current: number, theirs: Lineage, since: number): boolean {
  const last = termAt(theirs, since);
  if (last === 0) return termAt(ours, since) === 0;
  const start = theirs.find(([t]) => t === last)?.[1];
  const mine = ours.find(([t]) => t === last)?.[1];
  if (start === undefined || mine !== start) return false;
  return agreesUpTo(ours, current, since, last);
}
