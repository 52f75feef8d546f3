/** Static shape inference (src/onnx/shapes.ts): exact shapes for each op it knows, by hand. */
import t from 'tap';
import { decodeModel } from '../dist/onnx/proto.js';
import { largestTensor, shapeGraph } from '../dist/onnx/shapes.js';
import { encode, int64Tensor, type Obj } from './helpers/onnx-build.js';

const info = (name: string, dims: (number | string)[], elemType = 1): Obj => ({
  name,
  type: { tensorType: { elemType, shape: { dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) } } },
});
const int = (name: string, i: number): Obj => ({ name, type: 2, i });
const ints = (name: string, values: number[]): Obj => ({ name, type: 7, ints: values });

/** The shape inferred for `out` of one node applied to z (and the given initializers). */
function shapeOf(node: Obj, z: number[], initializer: Obj[] = [], extraInputs: Obj[] = [], feeds: Record<string, number[]> = {}): number[] | null {
  const model = {
    irVersion: 8,
    opsetImport: [{ domain: '', version: 13 }],
    graph: { name: 'g', node: [node], initializer, input: [info('z', ['N', 1]), ...extraInputs], output: [{ name: 'out', type: { tensorType: { elemType: 1 } } }] },
  };
  const graph = shapeGraph(decodeModel(encode(model)));
  // Only `out` is produced, so the largest tensor is it (or null when unknown: no shape is declared to fall back on).
  const largest = largestTensor(graph, { z, ...feeds });
  return largest?.name === 'out' ? largest.shape : null;
}

t.test('elementwise, broadcasting and casts', async (t) => {
  t.same(shapeOf({ opType: 'Relu', input: ['z'], output: ['out'] }, [5, 3]), [5, 3]);
  t.same(shapeOf({ opType: 'Add', input: ['z', 'w'], output: ['out'] }, [5, 1], [], [info('w', [1, 4])], { w: [1, 4] }), [5, 4]);
  t.same(shapeOf({ opType: 'Mul', input: ['z', 'w'], output: ['out'] }, [5, 3], [], [info('w', [2, 3])], { w: [2, 3] }), null, 'shapes that do not broadcast: unknown');
  t.same(shapeOf({ opType: 'Cast', input: ['z'], output: ['out'], attribute: [int('to', 11)] }, [5, 3]), [5, 3]);
  t.same(shapeOf({ opType: 'Where', input: ['c', 'z', 'z'], output: ['out'] }, [5, 3], [], [info('c', [1, 3], 9)], { c: [1, 3] }), [5, 3]);
});

t.test('shape ops', async (t) => {
  t.same(shapeOf({ opType: 'Reshape', input: ['z', 's'], output: ['out'] }, [6, 4], [int64Tensor('s', [0, 2, -1])]), [6, 2, 2]);
  t.same(shapeOf({ opType: 'Flatten', input: ['z'], output: ['out'], attribute: [int('axis', 1)] }, [6, 2, 3]), [6, 6]);
  t.same(shapeOf({ opType: 'Transpose', input: ['z'], output: ['out'], attribute: [ints('perm', [1, 0, 2])] }, [6, 2, 3]), [2, 6, 3]);
  t.same(shapeOf({ opType: 'Transpose', input: ['z'], output: ['out'] }, [6, 2, 3]), [3, 2, 6], 'reversed without perm');
  t.same(shapeOf({ opType: 'Unsqueeze', input: ['z', 'a'], output: ['out'] }, [6, 3], [int64Tensor('a', [0, -1])]), [1, 6, 3, 1]);
  t.same(shapeOf({ opType: 'Squeeze', input: ['z', 'a'], output: ['out'] }, [6, 1, 3], [int64Tensor('a', [1])]), [6, 3]);
  t.same(shapeOf({ opType: 'Squeeze', input: ['z'], output: ['out'] }, [1, 6, 1, 3]), [6, 3], 'every 1 without axes');
  t.same(shapeOf({ opType: 'Concat', input: ['z', 'z'], output: ['out'], attribute: [int('axis', -1)] }, [6, 3]), [6, 6]);
  t.same(shapeOf({ opType: 'Gather', input: ['z', 'i'], output: ['out'], attribute: [int('axis', 1)] }, [6, 5, 3], [int64Tensor('i', [0, 2])]), [6, 2, 3]);
  t.same(shapeOf({ opType: 'Tile', input: ['z', 'r'], output: ['out'] }, [6, 3], [int64Tensor('r', [2, 3])]), [12, 9]);
  t.same(shapeOf({ opType: 'Expand', input: ['z', 's'], output: ['out'] }, [6, 1], [int64Tensor('s', [2, 1, 7])]), [2, 6, 7]);
  t.same(shapeOf({ opType: 'ConstantOfShape', input: ['s'], output: ['out'] }, [6, 1], [int64Tensor('s', [4, 5])]), [4, 5]);
});

t.test('linear ops', async (t) => {
  t.same(shapeOf({ opType: 'MatMul', input: ['z', 'w'], output: ['out'] }, [2, 6, 3], [], [info('w', [3, 4])], { w: [3, 4] }), [2, 6, 4]);
  t.same(shapeOf({ opType: 'Gemm', input: ['z', 'w'], output: ['out'], attribute: [int('transB', 1)] }, [6, 3], [], [info('w', [4, 3])], { w: [4, 3] }), [6, 4]);
  t.same(shapeOf({ opType: 'Gemm', input: ['z', 'w'], output: ['out'], attribute: [int('transA', 1)] }, [3, 6], [], [info('w', [3, 4])], { w: [3, 4] }), [6, 4]);
});

t.test('folded shape arithmetic: Shape → Gather → Div → Unsqueeze → Concat → Reshape', async (t) => {
  const model = {
    irVersion: 8,
    opsetImport: [{ domain: '', version: 13 }],
    graph: {
      name: 'g',
      node: [
        { opType: 'Shape', input: ['z'], output: ['s'] },
        { opType: 'Gather', input: ['s', 'zero'], output: ['n'] },
        { opType: 'Gather', input: ['s', 'one'], output: ['d'] },
        { opType: 'Div', input: ['d', 'two'], output: ['d2'] },
        { opType: 'Unsqueeze', input: ['n', 'axes'], output: ['n1'] },
        { opType: 'Unsqueeze', input: ['d2', 'axes'], output: ['d1'] },
        { opType: 'Concat', input: ['n1', 'd1', 'half'], output: ['target'], attribute: [int('axis', 0)] },
        { opType: 'Reshape', input: ['z', 'target'], output: ['out'] },
        { opType: 'Size', input: ['z'], output: ['size'] },
        { opType: 'Constant', output: ['c'], attribute: [{ name: 'value_ints', type: 7, ints: [1, 2, 3] }] },
        { opType: 'SomethingNew', input: ['z'], output: ['mystery'] },
        { opType: 'Relu', input: ['mystery'], output: ['after'] },
      ],
      initializer: [
        { name: 'zero', dims: [], dataType: 7, int64Data: [0] },
        { name: 'one', dims: [], dataType: 7, int64Data: [1] },
        { name: 'two', dims: [], dataType: 7, int64Data: [2] },
        int64Tensor('axes', [0]),
        int64Tensor('half', [-1]),
      ],
      input: [info('z', ['N', 8])],
      output: [info('out', ['N', 16, 'H'])],
    },
  };
  const graph = shapeGraph(decodeModel(encode(model)));
  // z [10, 8] → target [10, 8 / 2, -1] = [10, 4, 2]; the unknown op's outputs count for nothing.
  t.same(largestTensor(graph, { z: [10, 8] }), { name: 'out', op: 'Reshape', shape: [10, 4, 2], bytes: 320 });
  t.same(largestTensor(graph, { z: [1000, 8] }), { name: 'out', op: 'Reshape', shape: [1000, 4, 2], bytes: 32_000 }, 'the batch is bound');
});
