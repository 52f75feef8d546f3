/**
 * Grouped directions (issue 15): coordinates of the wrt tensor are assigned to G groups that share
 * one Rademacher sign, so the penalty measures interactions between groups (W+'s per-layer
 * styles, blocks of a latent) rather than between single coordinates.
 *
 * Sharing a sign per group is the same as drawing directions along the group basis: the G × d
 * matrix whose rows are the groups' indicator vectors. groupedDirections draws the G-dimensional
 * signs exactly as today's directions are drawn (rademacherDirections on the directions stream,
 * k × N × G) and expands them, so it equals directionsAlongBasis(those signs, groupBasis(groups))
 * bit for bit; the same basis gives the group-level Hessian (G × G: H_ab = 1_aᵀ H 1_b).
 *
 * Spec forms (the CLI's --groups text, and the HTTP body's `groups`):
 *   "rows"              one group per index of the first per-sample axis (W+ [n_styles, 512]:
 *                       each style row is a group); needs a per-sample rank of at least 2
 *   "blocks:4"          consecutive blocks of 4 flat coordinates (d must be a multiple of 4)
 *   "0-3,4-7,8+10-11"   groups separated by commas; each a '+'-joined list of flat coordinates or
 *                       inclusive ranges a-b (row-major over the per-sample shape)
 *   HTTP also:  [[0,1,2,3],[4,5,6,7]]   lists of flat coordinates
 *               {"labels": [0,0,1,1,…]}  one group number per coordinate (0 … G−1)
 * Every coordinate must be in exactly one group and no group may be empty.
 */
import { z } from 'zod';
import { AuditError, invalid } from '../contract/errors.js';
import { rademacherDirections } from './sampling.js';

export type GroupSpec = string | number[][] | { labels: number[] };

/**
 * The HTTP body's `groups`, structure only: whether coordinates are in range, cover the tensor
 * and do not overlap depends on the wrt tensor, so resolveGroups checks that with its own messages.
 */
export const GroupSpecSchema = z
  .union([
    z.string().min(1),
    z.array(z.array(z.number())),
    z.object({ labels: z.array(z.number()) }).strict(),
  ])
  .meta({
    description:
      'Coordinates of the wrt tensor that share one Rademacher sign: "rows" (one group per index of the first per-sample axis, W+), "blocks:N", "0-3,4-7" (flat coordinates), [[0,1],[2,3]], or {"labels": [0,0,1,1]}',
  });

export interface Groups {
  /** G, the number of groups. */
  count: number;
  /** d, the values per sample of the wrt tensor. */
  size: number;
  /** Coordinate → its group (length d). */
  assignment: Int32Array;
  /** How the groups were given, for results and reports ("rows", "blocks:4", "3 groups"). */
  description: string;
}

/** A spec checked against the per-sample shape of the wrt tensor (without the batch dimension). */
export function resolveGroups(spec: GroupSpec, perSampleShape: readonly number[]): Groups {
  const size = perSampleShape.reduce((a, b) => a * b, 1);
  if (typeof spec === 'string') return fromText(spec.trim(), perSampleShape, size);
  if (Array.isArray(spec)) return fromLists(spec, size, `${spec.length} groups`);
  if (spec && typeof spec === 'object' && Array.isArray((spec as { labels?: unknown }).labels)) return fromLabels(spec.labels, size);
  throw invalid('groups must be a string ("rows", "blocks:N" or "0-3,4-7"), a list of coordinate lists, or {"labels": [...]}');
}

function fromText(text: string, shape: readonly number[], size: number): Groups {
  if (text === 'rows') {
    if (shape.length < 2) {
      throw groupError(`groups 'rows' needs a wrt tensor with at least two axes per sample (like W+ [n_styles, 512]); this one has shape [${shape.join(', ')}]`);
    }
    const rows = shape[0];
    const per = size / rows;
    return withAssignment(Int32Array.from({ length: size }, (_, i) => Math.floor(i / per)), rows, 'rows');
  }
  const blocks = /^blocks:(\d+)$/.exec(text);
  if (blocks) {
    const width = Number(blocks[1]);
    if (width < 1 || size % width !== 0) {
      throw groupError(`groups 'blocks:${width}' needs a block size that divides the ${size} coordinates of the wrt tensor`);
    }
    return withAssignment(Int32Array.from({ length: size }, (_, i) => Math.floor(i / width)), size / width, text);
  }
  const lists = text.split(',').map((group, g) => parseGroup(group.trim(), g));
  return fromLists(lists, size, `${lists.length} groups`);
}

/** One group of the text form: '+'-joined coordinates and inclusive ranges. */
function parseGroup(text: string, g: number): number[] {
  if (text === '') throw groupError(`group ${g} of the groups spec is empty`);
  const coordinates: number[] = [];
  for (const part of text.split('+')) {
    const range = /^(\d+)(?:-(\d+))?$/.exec(part.trim());
    if (!range) {
      throw invalid(`groups: '${part}' in group ${g} is not a coordinate or a range a-b; write groups like "0-3,4-7" (flat coordinates, comma between groups, + within one), "rows" or "blocks:N"`);
    }
    const from = Number(range[1]);
    const to = range[2] === undefined ? from : Number(range[2]);
    if (to < from) throw groupError(`group ${g}: the range ${from}-${to} is empty (it runs backwards)`);
    for (let i = from; i <= to; i++) coordinates.push(i);
  }
  return coordinates;
}

function fromLists(lists: unknown[], size: number, description: string): Groups {
  if (lists.length === 0) throw groupError('groups lists no group');
  const assignment = new Int32Array(size).fill(-1);
  lists.forEach((list, g) => {
    if (!Array.isArray(list) || list.length === 0) throw groupError(`group ${g} is empty`);
    for (const c of list) {
      if (!Number.isSafeInteger(c)) throw invalid(`group ${g} holds ${String(c)}, which is not a whole-number coordinate`);
      if (c < 0 || c >= size) throw groupError(`group ${g} names coordinate ${c}, outside the wrt tensor's ${size} coordinates (0 to ${size - 1})`);
      if (assignment[c] !== -1) throw groupError(`coordinate ${c} is in group ${assignment[c]} and in group ${g}; each coordinate belongs to one group`);
      assignment[c] = g;
    }
  });
  return withAssignment(assignment, lists.length, description);
}

function fromLabels(labels: unknown[], size: number): Groups {
  if (labels.length !== size) throw groupError(`groups labels has ${labels.length} entries, but the wrt tensor has ${size} coordinates; give one group number per coordinate`);
  const assignment = new Int32Array(size);
  let count = 0;
  labels.forEach((label, c) => {
    if (!Number.isSafeInteger(label) || (label as number) < 0) throw invalid(`groups labels[${c}] is ${String(label)}; labels are group numbers 0, 1, 2, …`);
    assignment[c] = label as number;
    count = Math.max(count, (label as number) + 1);
  });
  return withAssignment(assignment, count, `${count} groups`);
}

/** Every coordinate covered, every group 0 … count−1 non-empty. */
function withAssignment(assignment: Int32Array, count: number, description: string): Groups {
  const uncovered: number[] = [];
  const members = new Int32Array(count);
  assignment.forEach((g, c) => (g < 0 ? uncovered.push(c) : members[g]++));
  if (uncovered.length > 0) {
    const shown = uncovered.slice(0, 8).join(', ') + (uncovered.length > 8 ? ', …' : '');
    throw groupError(`${uncovered.length} coordinates of the wrt tensor are in no group (${shown}); every coordinate must be in one group`);
  }
  const empty = members.findIndex((m) => m === 0);
  if (empty !== -1) throw groupError(`group ${empty} is empty: no coordinate has that label`);
  return { count, size: assignment.length, assignment, description };
}

const groupError = (message: string): AuditError => new AuditError('invalid_groups', message);

/** The group basis: G × d, row a is the indicator vector of group a (for basis.ts and the Hessian). */
export function groupBasis(groups: Groups): Float64Array {
  const basis = new Float64Array(groups.count * groups.size);
  groups.assignment.forEach((g, c) => (basis[g * groups.size + c] = 1));
  return basis;
}

/** Group-level signs (… × G, e.g. k × N × G) expanded to the wrt tensor's coordinates (… × d). */
export function expandGroupSigns(signs: ArrayLike<number>, groups: Groups): Float32Array {
  const rows = signs.length / groups.count;
  const out = new Float32Array(rows * groups.size);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < groups.size; c++) out[r * groups.size + c] = signs[r * groups.count + groups.assignment[c]];
  }
  return out;
}

/** Seeded grouped Rademacher directions, k × N × d: one sign per group, drawn like today's directions. */
export function groupedDirections(k: number, samples: number, groups: Groups, seed: number): Float32Array {
  return expandGroupSigns(rademacherDirections(k, samples * groups.count, seed), groups);
}
