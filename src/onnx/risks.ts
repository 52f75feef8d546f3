/**
 * Graph patterns that break the finite-difference estimate (the seed tips):
 *  - random ops: G(z+εv), G(z) and G(z−εv) must be exactly the same computation;
 *  - ops that mix batch rows (batch statistics): stacking passes into one batch changes G.
 */
import type { GraphProto, ModelProtoObject, NodeProto, TensorProto } from './proto.js';

export interface NodeRisk {
  node: string;
  op: string;
  why: string;
}

const RANDOM_OPS = new Set(['RandomNormal', 'RandomNormalLike', 'RandomUniform', 'RandomUniformLike', 'Multinomial', 'Bernoulli']);
const REDUCE_OPS = new Set([
  'ReduceMean', 'ReduceSum', 'ReduceMax', 'ReduceMin', 'ReduceProd', 'ReduceL1', 'ReduceL2',
  'ReduceLogSum', 'ReduceLogSumExp', 'ReduceSumSquare',
]);

const nodeName = (node: NodeProto, index: number): string => node.name || `${node.opType}#${index}`;
const attribute = (node: NodeProto, name: string) => node.attribute?.find((a) => a.name === name);

/** Constant values known from initializers and Constant nodes, for boolean/int inputs. */
function constants(graph: GraphProto): Map<string, number[]> {
  const known = new Map<string, number[]>();
  const values = (t: TensorProto): number[] | undefined => {
    if (t.int32Data?.length) return t.int32Data;
    if (t.int64Data?.length) return t.int64Data;
    if (t.rawData?.length && (t.dataType === 9 || t.dataType === 2)) return Array.from(t.rawData); // bool, uint8
    if (t.rawData?.length && t.dataType === 7) {
      const view = new DataView(t.rawData.buffer, t.rawData.byteOffset, t.rawData.byteLength);
      return Array.from({ length: t.rawData.length / 8 }, (_, i) => Number(view.getBigInt64(i * 8, true)));
    }
    return undefined;
  };
  for (const t of graph.initializer ?? []) {
    const v = t.name ? values(t) : undefined;
    if (v) known.set(t.name!, v);
  }
  for (const node of graph.node ?? []) {
    const value = node.opType === 'Constant' ? attribute(node, 'value') : undefined;
    const tensor = value?.t;
    const v = tensor ? values(tensor) : undefined;
    if (v && node.output?.[0]) known.set(node.output[0], v);
  }
  return known;
}

export function randomOps(model: ModelProtoObject): NodeRisk[] {
  const graph = model.graph ?? {};
  const known = constants(graph);
  const risks: NodeRisk[] = [];
  (graph.node ?? []).forEach((node, i) => {
    if (RANDOM_OPS.has(node.opType)) {
      risks.push({ node: nodeName(node, i), op: node.opType, why: 'draws random numbers on every run' });
    } else if (node.opType === 'Dropout') {
      // opset ≥ 12: training_mode is the third input; absent or constant false means inference.
      const mode = node.input?.[2];
      const value = mode ? known.get(mode) : [0];
      if (value === undefined || value.some((x) => x !== 0)) {
        risks.push({ node: nodeName(node, i), op: 'Dropout', why: 'runs in training mode (a new mask on every run)' });
      }
    }
  });
  return risks;
}

/** Ops whose output for one row depends on other rows, where the graph alone can tell. */
export function batchMixingOps(model: ModelProtoObject): NodeRisk[] {
  const graph = model.graph ?? {};
  const known = constants(graph);
  const risks: NodeRisk[] = [];
  (graph.node ?? []).forEach((node, i) => {
    if (node.opType === 'BatchNormalization' && (attribute(node, 'training_mode')?.i ?? 0) !== 0) {
      risks.push({ node: nodeName(node, i), op: node.opType, why: 'normalizes with batch statistics (training mode)' });
    } else if (REDUCE_OPS.has(node.opType)) {
      const axes = attribute(node, 'axes')?.ints ?? (node.input?.[1] ? known.get(node.input[1]) : undefined);
      const noopWhenEmpty = (attribute(node, 'noop_with_empty_axes')?.i ?? 0) !== 0;
      if ((axes === undefined && !node.input?.[1] && !noopWhenEmpty) || axes?.includes(0)) {
        risks.push({ node: nodeName(node, i), op: node.opType, why: 'reduces over the batch axis' });
      }
    }
  });
  return risks;
}
