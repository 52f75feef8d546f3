/**
 * The audit metrics as worker tasks: the server's routes hand one to the pool and get back the
 * JSON result, or the rendered HTML report (rendered in the worker too, so the preview images never
 * cross the process boundary and the event loop never builds PNGs).
 */
import { renderReport } from '../report/index.js';
import {
  type AuditContext,
  type AuditRequest,
  evaluateActiveness,
  evaluateAudit,
  evaluateHessian,
  evaluateOrthogonality,
} from './audit.js';
import type { LoadedModel } from './model.js';
import type { Limits } from './request.js';

export type AuditMetric = 'hessian' | 'activeness' | 'orthogonality' | 'audit';

export interface AuditTask {
  kind: AuditMetric;
  modelId: string;
  modelPath: string;
  request: AuditRequest;
  limits: Limits;
  format: 'json' | 'html';
  /** How the report names the model (the store has only its id). */
  modelName?: string;
}

/** A JSON result (typed per metric by the caller), or `{html}` for the report. */
export type AuditValue = { html: string } | Record<string, unknown>;

export async function runAuditTask(task: AuditTask, model: LoadedModel, context: AuditContext): Promise<AuditValue> {
  const html = task.format === 'html';
  const ctx = { ...context, previews: html };
  const name = task.modelName ? { modelName: task.modelName } : {};
  switch (task.kind) {
    case 'hessian': {
      const r = await evaluateHessian(model, task.request, ctx);
      return html ? { html: renderReport({ ...name, hessian: r, previews: r.previews }) } : { ...r };
    }
    case 'activeness': {
      const r = await evaluateActiveness(model, task.request, ctx);
      return html ? { html: renderReport({ ...name, activeness: r }) } : { ...r };
    }
    case 'orthogonality': {
      const r = await evaluateOrthogonality(model, task.request, ctx);
      return html ? { html: renderReport({ ...name, orthogonality: r }) } : { ...r };
    }
    case 'audit': {
      const r = await evaluateAudit(model, task.request, ctx);
      return html ? { html: renderReport({ ...name, ...r }) } : { ...r };
    }
  }
}
