/**
 * The step-halving verdict as pure functions (math/step-halving.ts): the growth a figure shows
 * under halving for each cause, built exactly (rounding ×16, kinks ×2/×4, smooth ×1), and each
 * branch of the verdict table in docs/noise.md. The models' truth is test/noise-models.test.ts.
 */
import t from 'tap';
import {
  expectedMaxChiSquare,
  halvingEvidence,
  stepPlan,
  STEP_ROWS_SHARE,
  KINK_GROWTH_MAX,
  maxScale,
  NEGLIGIBLE_SHARE,
  noiseVerdict,
  ROUNDING_GROWTH_MIN,
  roundingShare,
  scaling,
  SMOOTH_GROWTH_MAX,
} from '../dist/math/index.js';

/** P(h) = T·(ε/h)^p + R·(ε/h)⁴ at 2ε, ε, ε/2: a model part growing as h^−p and rounding as h⁻⁴. */
const figures = (model: number, p: number, rounding: number) => {
  const at = (h: number) => model * h ** -p + rounding * h ** -4;
  return { double: at(2), at: at(1), half: at(0.5) };
};

t.test('stepPlan: within 25% of the request rows at every N and k', async (t) => {
  t.same(stepPlan(8), { samples: 1, factors: [2, 0.5] });
  t.same(stepPlan(15), { samples: 1, factors: [2, 0.5] }, 'one per eight, rounded down');
  t.same(stepPlan(64), { samples: 8, factors: [2, 0.5] });
  t.same(stepPlan(5), { samples: 1, factors: [2] }, 'N = 4 to 7: 2ε alone');
  t.equal(stepPlan(3), null, 'below 4: none');
  t.same(stepPlan(3, true), { samples: 1, factors: [2, 0.5] }, 'asked for explicitly');
  t.same(stepPlan(64, true), stepPlan(64), 'asking changes nothing from N = 8');
  let worst = 0;
  for (let n = 4; n <= 200; n++) {
    for (const k of [2, 3, 4, 8, 64, 4096]) {
      const plan = stepPlan(n)!;
      worst = Math.max(worst, (plan.samples * plan.factors.length * 2 * k) / (n * (2 * k + 1)));
    }
  }
  t.ok(worst < STEP_ROWS_SHARE, `the most extra rows over N = 4…200 and k = 2…4096: ${(100 * worst).toFixed(1)}%`);
  t.equal((stepPlan(8)!.samples * 2 * 2 * 2) / (8 * 5), 0.2, '20% on the default request');
});

t.test('growth per cause: rounding ×16, kinks ×2 (mean) to ×4 (max), smooth ×1', async (t) => {
  const growth = (f: ReturnType<typeof figures>) => halvingEvidence(f, f.at, 1).growth;
  t.same(growth(figures(0, 0, 1)), { up: 16, down: 16 });
  t.same(growth(figures(1, 1, 0)), { up: 2, down: 2 });
  t.same(growth(figures(1, 2, 0)), { up: 4, down: 4 });
  t.same(growth(figures(1, 0, 0)), { up: 1, down: 1 });
  t.same(halvingEvidence({ double: 0, at: 1, half: 0 }, 1, 1).growth, { up: null, down: null }, 'a zero figure has no ratio');
  t.equal(halvingEvidence({ double: 1, at: 2, half: 3 }, 8, 2).share, 0.5, "the subset's figure × scale over the layer's");
  t.equal(halvingEvidence({ double: 1, at: 2, half: 3 }, 0, 2).share, null);
});

t.test('maxScale: a max over more elements of noise is larger by the ratio of expected maxima', async (t) => {
  t.equal(maxScale(2, 16, 128, 'mean'), 1);
  t.equal(maxScale(2, 16, 128, 'max'), expectedMaxChiSquare(1, 128) / expectedMaxChiSquare(1, 16));
  t.ok(maxScale(2, 16, 128, 'max') > 1.5 && maxScale(2, 16, 128, 'max') < 2);
});

t.test('the verdict table (docs/noise.md): every branch', async (t) => {
  const verdict = (penalty: number, floor: number, f: ReturnType<typeof figures> | null, kinked: boolean, scale = 1) =>
    noiseVerdict({ penalty, floor, margin: 10, evidence: f ? halvingEvidence(f, penalty, scale) : null, kinked });
  // Without the halving: the floor alone.
  t.same(verdict(1, 1, null, false), { belowFloor: true, reason: 'floor', kinks: false });
  t.same(verdict(100, 1, null, true), { belowFloor: false, reason: 'clear', kinks: false });
  // Below the floor, a kinked layer growing ×4: kinks, not rounding.
  t.same(verdict(1, 1, figures(1, 2, 0), true), { belowFloor: false, reason: 'halving', kinks: true });
  // The same growth on a smooth layer is outside its band [1/3, 3]: the floor stands.
  t.same(verdict(1, 1, figures(1, 2, 0), false), { belowFloor: true, reason: 'floor', kinks: false });
  // A smooth layer that stays flat: cleared, and no kinks.
  t.same(verdict(1, 1, figures(1, 0, 0), false), { belowFloor: false, reason: 'halving', kinks: false });
  // Rounding growing ×16 on both sides: below on either kind of layer.
  t.same(verdict(1, 1, figures(0.01, 1, 1), true), { belowFloor: true, reason: 'floor', kinks: false });
  // A figure of 0 at a spacing (rows rounding to the centre): no clearance.
  t.same(noiseVerdict({ penalty: 1, floor: 1, margin: 10, evidence: halvingEvidence({ double: 0, at: 1, half: 1 }, 1, 1), kinked: true }).reason, 'floor');
  // The halving samples' figure is 1% of the layer's: whatever it is, cleared.
  t.same(verdict(100, 20, figures(0, 0, 1), false), { belowFloor: false, reason: 'negligible', kinks: false });
  // Above the floor, but rounding on both sides and at least half the figure: below.
  t.same(verdict(100, 1, figures(0, 0, 60), false), { belowFloor: true, reason: 'rounding', kinks: false });
  // Above the floor, rounding-like growth on a negligible share: clear.
  t.same(verdict(100, 1, figures(0, 0, 1), false), { belowFloor: false, reason: 'clear', kinks: false });
  // Above the floor on a kinked layer that moves: clear, with kinks; a stable one reports none.
  t.same(verdict(100, 1, figures(100, 1, 0), true), { belowFloor: false, reason: 'clear', kinks: true });
  t.same(verdict(100, 1, figures(100, 0, 0), true), { belowFloor: false, reason: 'clear', kinks: false });
  // The thresholds keep their order: kinks' largest growth < the clearance < rounding's.
  t.ok(4 < KINK_GROWTH_MAX && KINK_GROWTH_MAX < ROUNDING_GROWTH_MIN && ROUNDING_GROWTH_MIN < 16);
  t.ok(SMOOTH_GROWTH_MAX < KINK_GROWTH_MAX && NEGLIGIBLE_SHARE < 0.1);
});

t.test('scaling: the exponent is the mean log₂ growth; the regime from rounding growth, kinks and the share', async (t) => {
  const e = (up: number | null, down: number | null, share: number | null = 1) => ({ growth: { up, down }, share });
  t.same(scaling(e(null, null), false), { exponent: null, regime: null, roundingShare: null }, 'nothing measured');
  t.same(scaling(e(16, 16), false), { exponent: 4, regime: 'rounding', roundingShare: 1 }, '×16 both sides: rounding');
  t.same(scaling(e(16, 16), true), { exponent: 4, regime: 'rounding', roundingShare: 1 }, 'on a kinked layer too, when its samples carry the figure');
  t.same(scaling(e(16, 16, 0.1), true), { exponent: 4, regime: 'kinks', roundingShare: 1 }, 'a kinked layer whose figure lies in the other samples');
  t.same(scaling(e(16, 16, 0.1), false), { exponent: 4, regime: 'rounding', roundingShare: 1 }, 'rounding is in every sample of a smooth layer');
  t.same(scaling(e(2, 4), true), { exponent: 1.5, regime: 'kinks', roundingShare: 2 / 14 }, 'ε⁻¹ then ε⁻²: kinks');
  t.same(scaling(e(1, 1), false), { exponent: 0, regime: 'smooth', roundingShare: 0 }, 'flat: smooth');
  t.same(scaling(e(0.5, 32), false), { exponent: 2, regime: 'mixed', roundingShare: 1 }, 'rounding on one side only');
  t.same(scaling(e(8, null), false), { exponent: 3, regime: 'mixed', roundingShare: null }, 'one side measured, growing like rounding');
  t.same(scaling(e(null, 2), true), { exponent: 1, regime: 'kinks', roundingShare: null }, 'one side measured on a kinked layer');
});

t.test('roundingShare: a signal growing g and rounding ×16 mixed in a known share give that share back', async (t) => {
  for (const g of [0.9, 1, 2, 4]) {
    for (const rho of [0, 0.1, 0.5, 0.9]) {
      // At 2ε rounding is 16× smaller: up = P(ε)/P(2ε) with P(2ε) = (1 − ρ)/g + ρ/16 (P(ε) = 1).
      const up = 1 / ((1 - rho) / g + rho / 16);
      const down = (1 - rho) * g + 16 * rho;
      const got = roundingShare({ up, down })!;
      // Exact when rounding is small at 2ε (up ≈ g); within the bound the upper side leaves otherwise.
      if (rho === 0) t.ok(Math.abs(got) < 1e-12, `g ${g}, ρ 0: ${got}`);
      else t.ok(Math.abs(got - rho) <= rho, `g ${g}, ρ ${rho}: ${got.toFixed(3)}`);
    }
  }
  t.equal(roundingShare({ up: 16, down: 16 }), 1, 'pure rounding');
  t.equal(roundingShare({ up: 2, down: 2 }), 0, 'a pure power law (kinks)');
  t.equal(roundingShare({ up: null, down: 16 }), null);
});
