/**
 * The estimator on the device (docs/design.md, "Units, chunks and the estimator on the device"): ONNX
 * ops appended to the generator's own graph that reduce a chunk's stacked outputs inside the
 * session, so what leaves onnxruntime per chunk is O(samples × elements), independent of k.
 *
 * How the graph is extended: like expose.ts, by appending the encoding of
 * `ModelProto { graph { node, input, output, initializer } }` to the original bytes. Protobuf
 * appends repeated fields on a merge, so the suffix's nodes follow the generator's (still a
 * topological order), and every byte of the export — weights, fields this schema does not know —
 * stays as it was; nothing of a 100 MB model is decoded and re-encoded. The generator's own
 * outputs stay declared; the caller fetches only the suffix's outputs (`session.run(feeds,
 * fetches)`), so the raw rows are never copied out.
 *
 * The penalty suffix. Per chunk the layout is fed, not baked in, so one session serves every
 * chunk, any k and any ε. With S sample slots and m direction columns per slot:
 *
 *   inputs   hessian_suffix.center   int64 [S]     batch row of slot s's center g(z)
 *            hessian_suffix.plus     int64 [S, m]  batch row of g(z + εv_j) for the slot's j-th direction
 *            hessian_suffix.minus    int64 [S, m]  batch row of g(z − εv_j)
 *            hessian_suffix.weight   A     [S, m]  1 for a real direction, 0 for padding (pad with the
 *                                                  center row: q = 0 there, so 0·q stays 0)
 *            hessian_suffix.epsilon  A     []      ε
 *   outputs  hessian_suffix.count    A [S]         directions in each slot (Σ weight)
 *            hessian_suffix.<i>.mean A [S, E]      per element, the mean of q over the slot's directions
 *            hessian_suffix.<i>.m2   A [S, E]      per element, Σ (q − mean)² (merge chunks by Chan's formula)
 *            hessian_suffix.<i>.max_abs A [S]      max |g(z)| over the center's elements (noise floor)
 *            hessian_suffix.<i>.non_finite A [S]   elements whose partial m2 is NaN or ±Inf
 *
 * with q_j = (g(z+εv_j) − 2g(z) + g(z−εv_j)) / ε², i the layer's index in `layers`, E its
 * elements per sample (the layer's shape after the batch axis, flattened), and A the accumulation
 * type. Rows are gathered along axis 0 of each layer's tensor, so the batch axis must be first.
 *
 * Precision. The layer is cast to A first (float16 and float32 widen exactly to float64). With A =
 * float64 (the default) q is computed by the same float64 operations in the same order as the
 * JavaScript reference (second-difference.ts), so the figures agree to rounding of the sums
 * (tests: relative 1e-9). With A = float32 — what a GPU runs fastest — q carries an absolute error
 * up to about 4u·max|g|/ε² (u = 2⁻²⁴, from rounding g+ − 2g in float32) and the sums of m terms
 * add about m·u relative; the tests state the bound they check.
 *
 * The full-Hessian suffix (appendHessianSuffix, d² + d + 1 rows per sample, hessian-compact.ts):
 *   inputs   hessian_suffix.hessian.rows     int64 [S, R]  each slot's R = d² + d + 1 rows, layout order
 *            hessian_suffix.hessian.stencil  A [d², R]     compactStencilMatrix(d): the weights at ε = 1
 *            hessian_suffix.hessian.epsilon  A []          ε
 *            hessian_suffix.hessian.element  int64 [1]     the element whose full Hessian .element returns
 *   outputs  hessian_suffix.hessian.<i>.off_squares, max_diagonal, max_off, sum_diagonal, sum_off  A [S, E]
 *            hessian_suffix.hessian.<i>.interaction  A [S, d²];  .max_abs  A [S]
 *            hessian_suffix.hessian.<i>.element  A [S, d², 1]  (not in `fetches`: fetched when asked for)
 * H = (W·G) / ε² is one MatMul over the gathered [S, R, E] and one Div; constant 0/1 masks pick the
 * diagonal and the off-diagonal. W at ε = 1 holds 1, −2, ±½: its products are exact, so W·G sums
 * the reference's terms and the Div is the reference's (math/hessian.ts), and a linear layer's
 * Hessian is exactly 0 here too (W(ε) would round 1/ε² into every product). HessianAccumulator.slots (math/hessian.ts) folds these into HessianFigures.
 *
 * The activeness suffix (appendActivenessSuffix, 3 rows per latent and sample):
 *   inputs   hessian_suffix.activeness.rows  int64 [U, 3]  each unit's rows (latent at −extent, 0, +extent)
 *   outputs  hessian_suffix.activeness.<i>.variance_sum  A [U]  Σ_e of the unbiased variance of the 3
 *            hessian_suffix.activeness.<i>.shape  int64 [2]  the layer's [rows, E] in this batch (the
 *            sums hide E, so the host checks it against the preflight's)
 * The host adds output u to its latent's sum and E to its count (ActivenessAccumulator's state).
 *
 * The orthogonality suffix (appendOrthogonalitySuffix, 1 + k rows per sample):
 *   inputs   hessian_suffix.orthogonality.center  int64 [S]     batch row of slot s's center g(z)
 *            hessian_suffix.orthogonality.plus    int64 [S, m]  batch row of g(z + εv_j) (padding: the center)
 *            hessian_suffix.orthogonality.epsilon A []
 *   outputs  hessian_suffix.orthogonality.<i>.norms  A [S, m]  ‖(g(z + εv_j) − g(z)) / ε‖² over E
 *            hessian_suffix.orthogonality.<i>.shape  int64 [2]  the layer's [rows, E] (checked, as activeness's)
 * The variance over the k norms of a sample stays on the host (OrthogonalityAccumulator).
 *
 * Bases need no suffix of their own: the directions b_i are in the latent rows the host fills, so
 * every suffix reduces along a basis unchanged.
 */
import { decodeModel, modelProto, type NodeProto, type TensorProto } from './proto.js';

export type Accumulation = 'float64' | 'float32';

/** ONNX TensorProto.DataType codes used here. */
const FLOAT = 1;
const INT64 = 7;
const DOUBLE = 11;
/** AttributeProto.AttributeType codes. */
const ATTR_INT = 2;
const ATTR_INTS = 7;

const PREFIX = 'hessian_suffix';

export interface PenaltySuffixLayer {
  mean: string;
  m2: string;
  maxAbs: string;
  nonFinite: string;
}

export interface PenaltySuffix {
  /** The model's bytes with the suffix appended. */
  bytes: Uint8Array;
  accumulation: Accumulation;
  inputs: { center: string; plus: string; minus: string; weight: string; epsilon: string };
  outputs: { count: string; layers: Record<string, PenaltySuffixLayer> };
  /** Every output name to pass as `fetches` to session.run. */
  fetches: string[];
}

export interface PenaltySuffixOptions {
  /** Tensors to reduce: graph outputs or intermediate tensors, batch axis first. */
  layers: readonly string[];
  accumulation?: Accumulation;
  /** The model's default-domain opset; read from the model when not given (decodes it once). */
  opset?: number;
}

/** The default-domain opset a model imports (the suffix's ops follow its signatures). */
export function defaultOpset(bytes: Uint8Array): number {
  const imports = decodeModel(bytes).opsetImport ?? [];
  const own = imports.find((o) => (o.domain ?? '') === '' || o.domain === 'ai.onnx');
  if (own?.version === undefined) throw new Error('the model imports no default-domain opset');
  return own.version;
}

/** Appends the penalty suffix for `layers`; see the module comment for its inputs and outputs. */
export function appendPenaltySuffix(bytes: Uint8Array, options: PenaltySuffixOptions): PenaltySuffix {
  const { layers, accumulation, g } = startSuffix(bytes, options, 'penalty', 11);
  const inputs = {
    center: `${PREFIX}.center`,
    plus: `${PREFIX}.plus`,
    minus: `${PREFIX}.minus`,
    weight: `${PREFIX}.weight`,
    epsilon: `${PREFIX}.epsilon`,
  };
  g.input(inputs.center, INT64, ['slots']);
  g.input(inputs.plus, INT64, ['slots', 'directions']);
  g.input(inputs.minus, INT64, ['slots', 'directions']);
  g.input(inputs.weight, g.type, ['slots', 'directions']);
  g.input(inputs.epsilon, g.type, []);

  // Shared by every layer: 1/ε², the weights as [S, m, 1], the count and its guard against 0.
  const flat = g.int64s('flat', [0, -1]);
  const column = g.int64s('column', [0, 1, -1]);
  const lastAxis = g.int64s('last_axis', [0, 0, 1]);
  const asColumn = g.int64s('as_column', [-1, 1]);
  const one = g.scalar('one', 1);
  const two = g.scalar('two', 2);
  const inverseEpsilonSquared = g.node('Div', [one, g.node('Mul', [inputs.epsilon, inputs.epsilon])]);
  const weight = g.node('Reshape', [inputs.weight, lastAxis]);
  const count = g.reduce('ReduceSum', inputs.weight, [1], false, `${PREFIX}.count`);
  const divisor = g.node('Reshape', [g.node('Max', [count, one]), asColumn]);
  g.output(count);

  const outputLayers: Record<string, PenaltySuffixLayer> = {};
  layers.forEach((layer, i) => {
    const rows = g.flatRows(layer, flat);
    const center = g.node('Gather', [rows, inputs.center], [{ name: 'axis', type: ATTR_INT, i: 0 }]);
    const plus = g.node('Gather', [rows, inputs.plus], [{ name: 'axis', type: ATTR_INT, i: 0 }]);
    const minus = g.node('Gather', [rows, inputs.minus], [{ name: 'axis', type: ATTR_INT, i: 0 }]);
    // (g+ − 2g) + g−, then × 1/ε²: the reference's operations in the reference's order.
    const twiceCenter = g.node('Reshape', [g.node('Mul', [center, two]), column]);
    const q = g.node('Mul', [g.node('Add', [g.node('Sub', [plus, twiceCenter]), minus]), inverseEpsilonSquared]);
    const names: PenaltySuffixLayer = {
      mean: `${PREFIX}.${i}.mean`,
      m2: `${PREFIX}.${i}.m2`,
      maxAbs: `${PREFIX}.${i}.max_abs`,
      nonFinite: `${PREFIX}.${i}.non_finite`,
    };
    const sum = g.reduce('ReduceSum', g.node('Mul', [q, weight]), [1], false);
    const mean = g.node('Div', [sum, divisor], [], names.mean);
    const deviation = g.node('Sub', [q, g.node('Reshape', [mean, column])]);
    const m2 = g.reduce('ReduceSum', g.node('Mul', [g.node('Mul', [deviation, deviation]), weight]), [1], false, names.m2);
    g.reduce('ReduceMax', g.node('Abs', [center]), [1], false, names.maxAbs);
    // x − x is NaN exactly when x is NaN or ±Inf: one IsNaN (opset 9) instead of IsNaN and IsInf.
    const bad = g.node('Cast', [g.node('IsNaN', [g.node('Sub', [m2, m2])])], [{ name: 'to', type: ATTR_INT, i: g.type }]);
    g.reduce('ReduceSum', bad, [1], false, names.nonFinite);
    for (const name of Object.values(names)) g.output(name);
    outputLayers[layer] = names;
  });

  const joined = appendGraph(bytes, g);
  const outputs = { count, layers: outputLayers };
  const fetches = [count, ...Object.values(outputLayers).flatMap((l) => [l.mean, l.m2, l.maxAbs, l.nonFinite])];
  return { bytes: joined, accumulation, inputs, outputs, fetches };
}

export interface HessianSuffixLayer {
  /** [S, E]: Σ_{i≠j} H_ij² per element (the exact penalty is twice this). */
  offSquares: string;
  /** [S, d²]: Σ over elements of H_ij² (the interaction matrix, before the mean). */
  interaction: string;
  /** [S, E]: max |H_ii|, max_{i≠j} |H_ij|, Σ |H_ii|, Σ_{i≠j} |H_ij| per element. */
  maxDiagonal: string;
  maxOff: string;
  sumDiagonal: string;
  sumOff: string;
  /** [S]: max |g(z)| over the center's elements. */
  maxAbs: string;
  /** [S, d², 1]: the full Hessian of the element fed as inputs.element (fetch it only when asked for). */
  element: string;
}

export interface HessianSuffix {
  bytes: Uint8Array;
  accumulation: Accumulation;
  latents: number;
  /** rows int64 [S, d² + d + 1]: each slot's rows in compactHessianLayout order; stencil A [d², d² + d + 1]: compactStencilMatrix(d); epsilon A []; element int64 [1]. */
  inputs: { rows: string; stencil: string; epsilon: string; element: string };
  outputs: Record<string, HessianSuffixLayer>;
  fetches: string[];
}

/**
 * The full-Hessian suffix (d² + d + 1 rows per sample, src/penalty/hessian-compact.ts): each
 * slot's rows gathered as [S, R, E], H = W·G by one MatMul with the fed stencil W, then the
 * per-element figures hessian.ts reduces. A sample's rows must lie in one chunk.
 */
export function appendHessianSuffix(bytes: Uint8Array, options: PenaltySuffixOptions & { latents: number }): HessianSuffix {
  const d = options.latents;
  if (!Number.isInteger(d) || d < 1) throw new Error(`latents must be a positive integer, got ${d}`);
  const { layers, accumulation, g } = startSuffix(bytes, options, 'Hessian', 13);
  const R = d * d + d + 1;
  const inputs = { rows: `${PREFIX}.hessian.rows`, stencil: `${PREFIX}.hessian.stencil`, epsilon: `${PREFIX}.hessian.epsilon`, element: `${PREFIX}.hessian.element` };
  g.input(inputs.rows, INT64, ['slots', String(R)]);
  g.input(inputs.stencil, g.type, [String(d * d), String(R)]);
  g.input(inputs.epsilon, g.type, []);
  g.input(inputs.element, INT64, ['1']);
  const diagonal = Array.from({ length: d * d }, (_, p) => (Math.floor(p / d) === p % d ? 1 : 0));
  const diagonalMask = g.constant('hessian_diagonal', diagonal, [d * d, 1]);
  const offMask = g.constant('hessian_off', diagonal.map((x) => 1 - x), [d * d, 1]);
  const flat = g.int64s('hessian_flat', [0, -1]);
  const centerRow = g.int64s('hessian_center_row', [0]);
  const epsilonSquared = g.node('Mul', [inputs.epsilon, inputs.epsilon]);
  const outputs: Record<string, HessianSuffixLayer> = {};
  layers.forEach((layer, i) => {
    const rows = g.flatRows(layer, flat);
    const stacked = g.node('Gather', [rows, inputs.rows], [{ name: 'axis', type: ATTR_INT, i: 0 }]);
    const h = g.node('Div', [g.node('MatMul', [inputs.stencil, stacked]), epsilonSquared]);
    const squares = g.node('Mul', [h, h]);
    const abs = g.node('Abs', [h]);
    const absDiagonal = g.node('Mul', [abs, diagonalMask]);
    const absOff = g.node('Mul', [abs, offMask]);
    const name = (what: string) => `${PREFIX}.hessian.${i}.${what}`;
    const names: Omit<HessianSuffixLayer, 'element'> = {
      offSquares: g.reduce('ReduceSum', g.node('Mul', [squares, offMask]), [1], false, name('off_squares')),
      interaction: g.reduce('ReduceSum', squares, [2], false, name('interaction')),
      maxDiagonal: g.reduce('ReduceMax', absDiagonal, [1], false, name('max_diagonal')),
      maxOff: g.reduce('ReduceMax', absOff, [1], false, name('max_off')),
      sumDiagonal: g.reduce('ReduceSum', absDiagonal, [1], false, name('sum_diagonal')),
      sumOff: g.reduce('ReduceSum', absOff, [1], false, name('sum_off')),
      maxAbs: g.reduce('ReduceMax', g.node('Abs', [g.node('Gather', [stacked, centerRow], [{ name: 'axis', type: ATTR_INT, i: 1 }])]), [1, 2], false, name('max_abs')),
    };
    const element = g.node('Gather', [h, inputs.element], [{ name: 'axis', type: ATTR_INT, i: 2 }], name('element'));
    for (const output of [...Object.values(names), element]) g.output(output);
    outputs[layer] = { ...names, element };
  });
  const joined = appendGraph(bytes, g);
  const fetches = Object.values(outputs).flatMap(({ element: _, ...figures }) => Object.values(figures));
  return { bytes: joined, accumulation, latents: d, inputs, outputs, fetches };
}

export interface ActivenessSuffix {
  bytes: Uint8Array;
  accumulation: Accumulation;
  /** rows int64 [U, 3]: each unit's rows with its latent at −extent, 0, +extent. */
  inputs: { rows: string };
  /** Per layer, [U]: Σ over elements of the unbiased variance of the unit's three outputs; [2]: the layer's [rows, E] in the batch. */
  outputs: Record<string, { varianceSum: string; shape: string }>;
  fetches: string[];
}

/**
 * The activeness suffix (activeness.ts): per unit, Σ_e ((a−b)² + (b−c)² + (a−c)²)/6 over the
 * three outputs a, b, c — the reference's form, so an ignored latent gives exactly 0 here too.
 */
export function appendActivenessSuffix(bytes: Uint8Array, options: PenaltySuffixOptions): ActivenessSuffix {
  const { layers, accumulation, g } = startSuffix(bytes, options, 'activeness', 11);
  const inputs = { rows: `${PREFIX}.activeness.rows` };
  g.input(inputs.rows, INT64, ['units', '3']);
  const flat = g.int64s('activeness_flat', [0, -1]);
  const point = [0, 1, 2].map((p) => g.int64s(`activeness_point_${p}`, [p]));
  const six = g.scalar('activeness_six', 6);
  const outputs: Record<string, { varianceSum: string; shape: string }> = {};
  layers.forEach((layer, i) => {
    const rows = g.flatRows(layer, flat);
    const shape = g.node('Shape', [rows], [], `${PREFIX}.activeness.${i}.shape`);
    const stacked = g.node('Gather', [rows, inputs.rows], [{ name: 'axis', type: ATTR_INT, i: 0 }]);
    // [U, 1, E] each; Gather with a scalar index would drop the axis, a [1] index keeps it.
    const [a, b, c] = point.map((p) => g.node('Gather', [stacked, p], [{ name: 'axis', type: ATTR_INT, i: 1 }]));
    const square = (x: string, y: string): string => {
      const delta = g.node('Sub', [x, y]);
      return g.node('Mul', [delta, delta]);
    };
    const variance = g.node('Div', [g.node('Add', [g.node('Add', [square(a, b), square(b, c)]), square(a, c)]), six]);
    const varianceSum = g.reduce('ReduceSum', variance, [1, 2], false, `${PREFIX}.activeness.${i}.variance_sum`);
    g.output(varianceSum);
    g.output(shape);
    outputs[layer] = { varianceSum, shape };
  });
  return { bytes: appendGraph(bytes, g), accumulation, inputs, outputs, fetches: Object.values(outputs).flatMap((o) => [o.varianceSum, o.shape]) };
}

export interface OrthogonalitySuffix {
  bytes: Uint8Array;
  accumulation: Accumulation;
  /** center int64 [S]: each slot's center row; plus int64 [S, m]: its direction rows (pad with the center: ‖Jv‖² = 0 there); epsilon A []. */
  inputs: { center: string; plus: string; epsilon: string };
  /** Per layer, [S, m]: ‖(g(z + εv_j) − g(z)) / ε‖² over the layer's elements; [2]: the layer's [rows, E] in the batch. */
  outputs: Record<string, { norms: string; shape: string }>;
  fetches: string[];
}

/**
 * The orthogonality suffix (math/orthogonality.ts): per slot and direction column the squared
 * norm of the forward difference, the reference's operations in its order ((g+ − g) / ε, squared,
 * summed over elements). The variance over directions stays on the host (k values per sample).
 */
export function appendOrthogonalitySuffix(bytes: Uint8Array, options: PenaltySuffixOptions): OrthogonalitySuffix {
  const { layers, accumulation, g } = startSuffix(bytes, options, 'orthogonality', 11);
  const inputs = { center: `${PREFIX}.orthogonality.center`, plus: `${PREFIX}.orthogonality.plus`, epsilon: `${PREFIX}.orthogonality.epsilon` };
  g.input(inputs.center, INT64, ['slots']);
  g.input(inputs.plus, INT64, ['slots', 'directions']);
  g.input(inputs.epsilon, g.type, []);
  const flat = g.int64s('orthogonality_flat', [0, -1]);
  const column = g.int64s('orthogonality_column', [0, 1, -1]);
  const outputs: Record<string, { norms: string; shape: string }> = {};
  layers.forEach((layer, i) => {
    const rows = g.flatRows(layer, flat);
    const shape = g.node('Shape', [rows], [], `${PREFIX}.orthogonality.${i}.shape`);
    const center = g.node('Reshape', [g.node('Gather', [rows, inputs.center], [{ name: 'axis', type: ATTR_INT, i: 0 }]), column]);
    const plus = g.node('Gather', [rows, inputs.plus], [{ name: 'axis', type: ATTR_INT, i: 0 }]);
    const jv = g.node('Div', [g.node('Sub', [plus, center]), inputs.epsilon]);
    const norms = g.reduce('ReduceSum', g.node('Mul', [jv, jv]), [2], false, `${PREFIX}.orthogonality.${i}.norms`);
    g.output(norms);
    g.output(shape);
    outputs[layer] = { norms, shape };
  });
  return { bytes: appendGraph(bytes, g), accumulation, inputs, outputs, fetches: Object.values(outputs).flatMap((o) => [o.norms, o.shape]) };
}

/** A suffix's common start: its layers checked, the accumulation type, and a builder for the model's opset (at least `minimumOpset`). */
function startSuffix(bytes: Uint8Array, options: PenaltySuffixOptions, what: string, minimumOpset: number): { layers: readonly string[]; accumulation: Accumulation; g: GraphBuilder } {
  if (options.layers.length === 0) throw new Error(`the ${what} suffix needs at least one layer`);
  const accumulation = options.accumulation ?? 'float64';
  const opset = options.opset ?? defaultOpset(bytes);
  if (opset < minimumOpset) throw new Error(`the ${what} suffix needs opset ${minimumOpset} or later; the model imports opset ${opset}`);
  return { layers: options.layers, accumulation, g: new GraphBuilder(opset, accumulation === 'float64' ? DOUBLE : FLOAT) };
}

/** The model's bytes with the suffix's graph appended (the module comment says why appending merges). */
function appendGraph(bytes: Uint8Array, g: GraphBuilder): Uint8Array {
  const type = modelProto();
  const extra = type.encode(type.fromObject({ graph: g.graph() })).finish();
  const joined = new Uint8Array(bytes.length + extra.length);
  joined.set(bytes, 0);
  joined.set(extra, bytes.length);
  return joined;
}

interface ValueInfoObject {
  name: string;
  type: { tensorType: { elemType: number; shape: { dim: { dimParam?: string }[] } } };
}

/** Nodes, constants and declarations of a suffix, named under one prefix so they cannot clash. */
class GraphBuilder {
  private readonly nodes: NodeProto[] = [];
  private readonly initializers: TensorProto[] = [];
  private readonly inputs: ValueInfoObject[] = [];
  private readonly outputs: { name: string }[] = [];
  private serial = 0;

  constructor(
    readonly opset: number,
    /** The accumulation type's DataType code. */
    readonly type: number,
  ) {}

  input(name: string, elemType: number, dims: string[]): void {
    this.inputs.push({ name, type: { tensorType: { elemType, shape: { dim: dims.map((dimParam) => ({ dimParam })) } } } });
  }

  /** Declared by name only: onnxruntime infers its type and shape. */
  output(name: string): void {
    this.outputs.push({ name });
  }

  /** A layer's rows flattened to [batch, E] (`flat` holds [0, −1]), in the accumulation type. */
  flatRows(layer: string, flat: string): string {
    return this.node('Cast', [this.node('Reshape', [layer, flat])], [{ name: 'to', type: ATTR_INT, i: this.type }]);
  }

  int64s(name: string, values: number[]): string {
    const full = `${PREFIX}/${name}`;
    this.initializers.push({ name: full, dataType: INT64, dims: [values.length], int64Data: values });
    return full;
  }

  /** A constant of the accumulation type. */
  constant(name: string, values: number[], dims: number[]): string {
    const full = `${PREFIX}/${name}`;
    const data = this.type === DOUBLE ? { doubleData: values } : { floatData: values };
    this.initializers.push({ name: full, dataType: this.type, dims, ...data });
    return full;
  }

  scalar(name: string, value: number): string {
    const full = `${PREFIX}/${name}`;
    const data = this.type === DOUBLE ? { doubleData: [value] } : { floatData: [value] };
    this.initializers.push({ name: full, dataType: this.type, dims: [], ...data });
    return full;
  }

  node(opType: string, input: string[], attribute: NodeProto['attribute'] = [], output?: string): string {
    const name = output ?? `${PREFIX}/${opType.toLowerCase()}_${this.serial}`;
    this.nodes.push({ name: `${PREFIX}/node_${this.serial++}`, opType, input, output: [name], attribute });
    return name;
  }

  /** A reduction over `axes`, in the signature of the model's opset (axes became an input in 13/18). */
  reduce(opType: 'ReduceSum' | 'ReduceMax', input: string, axes: number[], keepdims: boolean, output?: string): string {
    const keep = { name: 'keepdims', type: ATTR_INT, i: keepdims ? 1 : 0 };
    const axesAsInput = opType === 'ReduceSum' ? this.opset >= 13 : this.opset >= 18;
    if (axesAsInput) return this.node(opType, [input, this.int64s(`axes_${this.serial}`, axes)], [keep], output);
    return this.node(opType, [input], [{ name: 'axes', type: ATTR_INTS, ints: axes }, keep], output);
  }

  graph(): object {
    return { node: this.nodes, initializer: this.initializers, input: this.inputs, output: this.outputs };
  }
}
