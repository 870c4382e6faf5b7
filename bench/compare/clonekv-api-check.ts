/**
 * Compile-time only (never imported at run time): `tsc` fails here if the clonekv core's API
 * drifts from the surface the comparison bench declares in `clonekv-api.ts`.
 *
 * @module
 */

import type * as Core from '../../src/index.ts';
import type { ClonekvModule } from './clonekv-api.ts';

/** `true` when `src/index.ts` provides everything the bench uses. */
export type CoreMatchesBench = typeof Core extends ClonekvModule ? true : false;

/** Assigning `true` fails to compile unless the core matches. */
export const coreMatchesBench: CoreMatchesBench = true;
