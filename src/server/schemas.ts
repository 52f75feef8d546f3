/** Response schemas of the model routes (the penalty schemas live in engine/schema.ts). */
import { z } from 'zod';
import type { ModelDescription } from '../onnx/describe.js';

export const ModelId = z.string().meta({ description: 'SHA-256 of the model bytes (64 hex digits)' });

const Tensor = z.object({
  name: z.string(),
  type: z.string(),
  shape: z.array(z.union([z.number(), z.string(), z.null()])).nullable(),
});

const Layer = z.object({
  name: z.string(),
  op: z.string(),
  node: z.string(),
  isOutput: z.boolean(),
  afterLinear: z.boolean(),
  suggestion: z.string().optional(),
});

const NodeRisk = z.object({ node: z.string(), op: z.string(), why: z.string() });

export const ModelSchema = z
  .object({
    id: ModelId,
    size: z.number().meta({ description: 'Bytes' }),
    created: z.boolean().meta({ description: 'false when these bytes were already stored' }),
    irVersion: z.number(),
    opsets: z.array(z.object({ domain: z.string(), version: z.number() })),
    producer: z.string(),
    inputs: z.array(Tensor),
    outputs: z.array(Tensor),
    layers: z.array(Layer),
    nodes: z.number(),
    ops: z.record(z.string(), z.number()),
    randomOps: z.array(NodeRisk).meta({ description: 'Nodes that make G random: penalties are refused unless allowNondeterministic' }),
    batchMixingOps: z.array(NodeRisk).meta({ description: 'Nodes whose batch rows interact: passes run as separate batches' }),
    warnings: z.array(z.object({ code: z.string(), message: z.string() })),
  })
  .meta({ id: 'Model' });

/** What a user should know before auditing (the seed tips): randomness, and rows that interact. */
export function modelWarnings(d: ModelDescription): { code: string; message: string }[] {
  const list = (risks: ModelDescription['randomOps']): string => risks.map((r) => `${r.node} (${r.op}: ${r.why})`).join(', ');
  const warnings: { code: string; message: string }[] = [];
  if (d.randomOps.length) {
    warnings.push({
      code: 'nondeterministic_model',
      message: `the forward pass is random: ${list(d.randomOps)}; penalties are refused unless allowNondeterministic is set. Export it in eval mode or with seeded noise`,
    });
  }
  if (d.batchMixingOps.length) {
    warnings.push({
      code: 'rows_interact',
      message: `rows of a batch influence each other: ${list(d.batchMixingOps)}; the 2k+1 passes will run as separate batches`,
    });
  }
  return warnings;
}

const file = (description: string) => z.string().meta({ format: 'binary', description });

/** The multipart forms, for the OpenAPI document only (multipart bodies are read as streams). */
export const UploadForm = z.object({ model: file('The ONNX model') });

export const OneShotForm = z.object({
  model: file('The ONNX model'),
  request: z.string().optional().meta({ description: 'The penalty request as JSON (the PenaltyRequest schema)' }),
  latents: file('z, N × … (.npy or JSON)').optional(),
  directions: file('k × N × … (.npy or JSON)').optional(),
  'inputs.<name>': file('An extra input by name (.npy or JSON)').optional(),
});

declare module 'fastify' {
  interface FastifyContextConfig {
    /** A multipart route's form, documented in the OpenAPI document. */
    form?: z.ZodType;
  }
}

const JobError = z.object({ code: z.string(), message: z.string(), details: z.unknown().optional() });

/** A job as GET /v1/jobs/{id} answers it (server/jobs.ts, JobView). */
export const JobSchema = z
  .object({
    id: z.string(),
    route: z.string(),
    state: z.enum(['queued', 'running', 'succeeded', 'failed', 'cancelled']),
    createdAt: z.string(),
    startedAt: z.string().optional(),
    finishedAt: z.string().optional(),
    progress: z.object({
      done: z.number(),
      total: z.number(),
      stage: z.string().optional(),
      elapsedMs: z.number(),
      estimatedRemainingMs: z.number().optional(),
    }),
    result: z.unknown().optional().meta({ description: 'The body the synchronous route returns, once succeeded (JSON results only)' }),
    resultType: z.string().optional().meta({ description: 'The content type of a result that is not JSON (fetch it from /result)' }),
    error: JobError.optional().meta({ description: 'The error envelope of a failed or cancelled job' }),
  })
  .meta({ id: 'Job' });

/** With `Prefer: respond-async`: the job accepted, and where to find it (the Location header). */
export const JobAccepted = { 202: JobSchema };
