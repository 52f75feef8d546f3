/**
 * Hand-built ONNX models for the safety tests, encoded with protobufjs through the project's own
 * schema (src/onnx/proto.ts modelProto()). Plain objects in, bytes out.
 */
import { modelProto } from '../../dist/onnx/proto.js';
import { modelBytes } from './reference.js';

// Loose on purpose: these objects are ONNX messages in protobufjs's camelCase form.
export type Obj = Record<string, any>;

export function encode(model: Obj): Uint8Array {
  const type = modelProto();
  const message = type.fromObject(model);
  return type.encode(message).finish();
}

export function decodeExample(name: string): Obj {
  const type = modelProto();
  return type.toObject(type.decode(modelBytes(name)), { longs: Number, arrays: true }) as Obj;
}

const FLOAT = 1;
export const floatInfo = (name: string, dims: (number | string)[]): Obj => ({
  name,
  type: { tensorType: { elemType: FLOAT, shape: { dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) } } },
});
export const rawFloats = (values: number[]): Uint8Array => new Uint8Array(Float32Array.from(values).buffer);

/** y = z · W with W 3×4 (the shape of linear_orthogonal.onnx), graph parts overridable. */
export function linearModel(graph: Obj = {}, model: Obj = {}): Obj {
  return {
    irVersion: 8,
    opsetImport: [{ domain: '', version: 14 }],
    producerName: 'safety-test',
    graph: {
      name: 'linear',
      node: [{ opType: 'MatMul', name: 'mm', input: ['z', 'W'], output: ['y'] }],
      initializer: [{ name: 'W', dims: [3, 4], dataType: FLOAT, rawData: rawFloats(Array.from({ length: 12 }, (_, i) => i)) }],
      input: [floatInfo('z', ['N', 3])],
      output: [floatInfo('y', ['N', 4])],
      ...graph,
    },
    ...model,
  };
}

/** The weight W stored outside the file, at `location`. */
export const externalWeight = (location: string): Obj => ({
  name: 'W',
  dims: [3, 4],
  dataType: FLOAT,
  dataLocation: 1,
  externalData: [
    { key: 'location', value: location },
    { key: 'offset', value: '0' },
    { key: 'length', value: '48' },
  ],
});

/** z → Relu → Relu → … (n nodes) → y. */
export function chainModel(n: number): Obj {
  const node = Array.from({ length: n }, (_, i) => ({
    opType: 'Relu',
    input: [i === 0 ? 'z' : `t${i - 1}`],
    output: [i === n - 1 ? 'y' : `t${i}`],
  }));
  return {
    irVersion: 8,
    opsetImport: [{ domain: '', version: 14 }],
    graph: { name: 'chain', node, input: [floatInfo('z', ['N', 3])], output: [floatInfo('y', ['N', 3])] },
  };
}

/** A Constant node whose value is `tensor`, feeding an Add with z. */
export function constantModel(tensor: Obj): Obj {
  return {
    irVersion: 8,
    opsetImport: [{ domain: '', version: 14 }],
    graph: {
      name: 'constant',
      node: [
        { opType: 'Constant', name: 'c', output: ['c'], attribute: [{ name: 'value', type: 4, t: tensor }] },
        { opType: 'Add', name: 'add', input: ['z', 'c'], output: ['y'] },
      ],
      input: [floatInfo('z', ['N', 3])],
      output: [floatInfo('y', ['N', 3])],
    },
  };
}

/** y = If(cond) then (z + c) else z, where the then-branch holds `thenInitializer`; nested `depth` deep. */
export function ifModel(depth: number, thenInitializer?: Obj, thenNode?: Obj): Obj {
  const branch = (level: number): Obj => {
    if (level === depth) {
      return {
        name: `then${level}`,
        node: [thenNode ?? { opType: 'Identity', input: ['z'], output: [`out${level}`] }],
        initializer: thenInitializer ? [thenInitializer] : [],
        output: [floatInfo(`out${level}`, ['N', 3])],
      };
    }
    return {
      name: `then${level}`,
      node: [ifNode(level + 1, `out${level}`)],
      output: [floatInfo(`out${level}`, ['N', 3])],
    };
  };
  const ifNode = (level: number, out: string): Obj => ({
    opType: 'If',
    name: `if${level}`,
    input: ['cond'],
    output: [out],
    attribute: [
      { name: 'then_branch', type: 5, g: branch(level) },
      { name: 'else_branch', type: 5, g: { name: `else${level}`, node: [{ opType: 'Identity', input: ['z'], output: [`e${level}`] }], output: [floatInfo(`e${level}`, ['N', 3])] } },
    ],
  });
  return {
    irVersion: 8,
    opsetImport: [{ domain: '', version: 14 }],
    graph: {
      name: 'if',
      node: [ifNode(1, 'y')],
      input: [floatInfo('z', ['N', 3]), { name: 'cond', type: { tensorType: { elemType: 9, shape: { dim: [] } } } }],
      output: [floatInfo('y', ['N', 3])],
    },
  };
}

/** A model-local function com.example.Double(x) = x + x, called from the graph. */
export function functionModel(extra: Obj = {}): Obj {
  return {
    irVersion: 8,
    opsetImport: [{ domain: '', version: 14 }, { domain: 'com.example', version: 1 }],
    functions: [
      {
        name: 'Double',
        domain: 'com.example',
        input: ['x'],
        output: ['y'],
        node: [{ opType: 'Add', input: ['x', 'x'], output: ['y'] }],
        opsetImport: [{ domain: '', version: 14 }],
        ...extra,
      },
    ],
    graph: {
      name: 'function',
      node: [{ opType: 'Double', domain: 'com.example', name: 'double', input: ['z'], output: ['y'] }],
      input: [floatInfo('z', ['N', 3])],
      output: [floatInfo('y', ['N', 3])],
    },
  };
}

// ---- Models whose outputs depend on the batch size (issue 11: batch re-checks, memory bombs) ----

const INT64 = 7;
export const int64Tensor = (name: string, values: number[]): Obj => ({
  name,
  dims: [values.length],
  dataType: INT64,
  rawData: new Uint8Array(BigInt64Array.from(values.map(BigInt)).buffer),
});

/** y = Tile(z, [1, N]): z [N, 3] → y [N, 3·N], so a row's output size grows with the batch. */
export function batchTiledModel(): Obj {
  return {
    irVersion: 8,
    opsetImport: [{ domain: '', version: 14 }],
    graph: {
      name: 'batch_tiled',
      node: [
        { opType: 'Shape', input: ['z'], output: ['shape'] },
        { opType: 'Slice', input: ['shape', 'zero', 'one'], output: ['n'] },
        { opType: 'Concat', input: ['one', 'n'], output: ['repeats'], attribute: [{ name: 'axis', type: 2, i: 0 }] },
        { opType: 'Tile', input: ['z', 'repeats'], output: ['y'] },
      ],
      initializer: [int64Tensor('zero', [0]), int64Tensor('one', [1])],
      input: [floatInfo('z', ['N', 3])],
      output: [floatInfo('y', ['N', 'M'])],
    },
  };
}

/** y = Tile(z, [1, N]) with z [N, width]: the output per row is width·N, growing with the batch. */
export function batchTiledWideModel(width: number): Obj {
  const model = batchTiledModel();
  model.graph.input = [floatInfo('z', ['N', width])];
  return model;
}

/** y = Expand(Unsqueeze(z, 2), [1, 1, length]): z [N, 3] → y [N, 3, length]. */
export function expandModel(length: number): Obj {
  return {
    irVersion: 8,
    opsetImport: [{ domain: '', version: 14 }],
    graph: {
      name: 'expand_bomb',
      node: [
        { opType: 'Unsqueeze', input: ['z', 'axes'], output: ['u'] },
        { opType: 'Expand', input: ['u', 'target'], output: ['y'] },
      ],
      initializer: [int64Tensor('axes', [2]), int64Tensor('target', [1, 1, length])],
      input: [floatInfo('z', ['N', 3])],
      output: [floatInfo('y', ['N', 3, length])],
    },
  };
}

/** y = Identity(z) and a second output c = ConstantOfShape([1, length]): onnxruntime folds c when the session is created. */
export function constantOfShapeModel(length: number): Obj {
  return {
    irVersion: 8,
    opsetImport: [{ domain: '', version: 14 }],
    graph: {
      name: 'constant_of_shape_bomb',
      node: [
        { opType: 'Identity', input: ['z'], output: ['y'] },
        { opType: 'ConstantOfShape', input: ['size'], output: ['c'] },
      ],
      initializer: [int64Tensor('size', [1, length])],
      input: [floatInfo('z', ['N', 3])],
      output: [floatInfo('y', ['N', 3]), floatInfo('c', [1, length])],
    },
  };
}

/**
 * y = Expand(z0·z1, [1, width]): z [N, 2] → y [N, width], every element z0·z1, so the Hessian of each
 * is [[0, 1], [1, 0]] (penalty 8 with the directions (1, 1) and (1, −1)); a row is width floats.
 */
export function wideRowModel(width: number): Obj {
  return {
    irVersion: 8,
    opsetImport: [{ domain: '', version: 14 }],
    graph: {
      name: 'wide_row',
      node: [
        { opType: 'Slice', input: ['z', 'zero', 'one', 'one'], output: ['z0'] },
        { opType: 'Slice', input: ['z', 'one', 'two', 'one'], output: ['z1'] },
        { opType: 'Mul', input: ['z0', 'z1'], output: ['p'] },
        { opType: 'Expand', input: ['p', 'target'], output: ['y'] },
      ],
      initializer: [int64Tensor('zero', [0]), int64Tensor('one', [1]), int64Tensor('two', [2]), int64Tensor('target', [1, width])],
      input: [floatInfo('z', ['N', 2])],
      output: [floatInfo('y', ['N', width])],
    },
  };
}
