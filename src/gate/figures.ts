/**
 * The audit figures that figure rules read, computed on the gate's own request (same latents, same
 * seed): the diagonal-ness fraction from the full Hessian, and the count of unused latents from the
 * activeness sweep. Only the figures some rule asks for are computed. The sources run in process
 * (the CLI) or in the server's worker pool (POST /v1/gate).
 */
import { type ActivenessResult, evaluateActiveness, evaluateHessian, type HessianResult } from '../engine/audit.js';
import type { AuditContext } from '../engine/audit-run.js';
import type { LoadedModel } from '../engine/model.js';
import type { PenaltyRequest } from '../engine/request.js';
import type { FigureProvider, GateModel } from './gate.js';
import { FIGURE_RULES, type Thresholds } from './rules.js';

export interface FigureSources<M extends GateModel> {
  hessian: (model: M, request: PenaltyRequest) => Promise<Pick<HessianResult, 'layers'>>;
  activeness: (model: M, request: PenaltyRequest) => Promise<Pick<ActivenessResult, 'layers'>>;
}

export const inProcessFigures = (context: AuditContext): FigureSources<LoadedModel> => ({
  hessian: (model, request) => evaluateHessian(model, request, context),
  activeness: (model, request) => evaluateActiveness(model, request, context),
});

/** Figures needed by the thresholds in force, over the defaults and every per-layer override. */
export function neededFigures(...thresholds: Thresholds[]): Set<string> {
  const needed = new Set<string>();
  for (const t of thresholds) {
    for (const [key, figure] of Object.entries(FIGURE_RULES)) if (t[key] !== undefined && t[key] !== null) needed.add(figure);
  }
  return needed;
}

export function auditFigures<M extends GateModel>(sources: FigureSources<M>, needed: Set<string>): FigureProvider<M> {
  return async (_side, model, request) => {
    const figures: Record<string, Record<string, number | null>> = {};
    const at = (layer: string): Record<string, number | null> => (figures[layer] ??= {});
    if (needed.has('diagonalFraction')) {
      const hessian = await sources.hessian(model, request);
      for (const l of hessian.layers) at(l.name).diagonalFraction = l.penalty === null ? null : l.diagonalFraction;
    }
    if (needed.has('unusedLatents')) {
      const activeness = await sources.activeness(model, request);
      for (const l of activeness.layers) at(l.name).unusedLatents = l.activeness.some((a) => a === null) ? null : l.unused.length;
    }
    return figures;
  };
}
