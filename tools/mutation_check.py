"""Mutation check: apply known one-line bugs to the package, one at a time, and run the tests
that must catch each. Every mutant must be killed (its tests fail); a survivor means the suite
lets that bug through.

    python tools/mutation_check.py            # every mutant, its own tests
    python tools/mutation_check.py --list     # the mutants
    python tools/mutation_check.py -k eps     # mutants whose name contains "eps"
    python tools/mutation_check.py --full     # each mutant against the whole default suite

Mutants are applied to the working tree in place (the package is installed in editable mode,
so subprocess tests see them too) and always restored; a mutant whose text is not found exactly
once is an error, so the list follows the code as it changes (``tests/test_mutants.py`` checks
that on every test run). Exit status: 0 when every selected mutant is killed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Edit:
    """Replace ``old`` (which must occur exactly once) by ``new`` in ``path`` (relative to the repository)."""

    path: str
    old: str
    new: str


@dataclass(frozen=True)
class Mutant:
    name: str
    bug: str
    edits: tuple[Edit, ...]
    tests: tuple[str, ...] = field(default_factory=tuple)


MENTORING = "lightning_mbo/functional/tri_mentoring.py"
MENTORING_HIGHER = "lightning_mbo/functional/tri_mentoring_higher.py"
TRI = "lightning_mbo/methods/tri_mentoring.py"
SURROGATE = "lightning_mbo/methods/surrogate.py"
BENCH = "lightning_mbo/benchmark.py"
T_MENTORING = "tests/functional/test_tri_mentoring.py"
T_SURROGATE = "tests/methods/test_surrogate.py"
T_SCALE = "tests/test_scale.py"
COMS, T_COMS = "lightning_mbo/methods/coms.py", "tests/methods/test_coms.py"
CBAS_F = "lightning_mbo/functional/cbas.py"
ROMA_F, T_ROMA = "lightning_mbo/functional/roma.py", "tests/methods/test_roma.py"
COTEACH, T_COTEACH = "lightning_mbo/functional/ict.py", "tests/functional/test_ict.py"
MINS_F = "lightning_mbo/functional/mins.py"
MORPH_ENV, T_MORPH = "lightning_mbo/tasks/morphology/env.py", "tests/tasks/test_morphology.py"
CMA, BO = "lightning_mbo/search/cma_es.py", "lightning_mbo/search/bo_qei.py"
REINFORCE, BEST = "lightning_mbo/search/reinforce.py", "lightning_mbo/methods/best_epoch.py"
COMPARISON, ASCENT = "lightning_mbo/comparison.py", "lightning_mbo/callbacks/design_ascent.py"
T_RELEASED, T_REL_SURR = "tests/search/test_released_settings.py", "tests/methods/test_released_surrogates.py"
T_RULES, T_OUTPUTS = "tests/test_comparison_rules.py", "tests/test_run_outputs.py"
T_RUNNER, T_LR0 = "tests/test_runner_keys.py", "tests/test_lr_zero.py"

MUTANTS: tuple[Mutant, ...] = (
    Mutant("soft_label_ascent", "soft-label step (paper Eq. 9) ascends the outer MSE, in both backends", (
        Edit(MENTORING_HIGHER, "s_full[mask] = (s_full[mask] - lambda_s * g_s[mask])",
             "s_full[mask] = (s_full[mask] + lambda_s * g_s[mask])"),
        Edit(MENTORING, "(s_a - lambda_s * g_s).clamp(0.0, 1.0)", "(s_a + lambda_s * g_s).clamp(0.0, 1.0)"),
    ), (T_MENTORING,)),
    Mutant("mentoring_two_beta", "mentoring step of 2β instead of β, in both backends", (
        Edit(MENTORING_HIGHER, "p.sub_(beta * g)", "p.sub_(2 * beta * g)"),
        Edit(MENTORING, "(flat[n] - beta * g_pair[n])", "(flat[n] - 2 * beta * g_pair[n])"),
    ), (T_MENTORING,)),
    Mutant("neighbourhood_delta_squared", "the method's neighbourhood drawn with δ² instead of δ", (
        Edit(TRI, "neighbourhood(x, k, self.hparams.delta, noise=",
             "neighbourhood(x, k, self.hparams.delta ** 2, noise="),
    ), ("tests/methods/test_tri_mentoring.py",)),
    Mutant("pair_loss_eps_1e-8", "pair-loss epsilon 1e-8 instead of 1e-9", (
        Edit(MENTORING, "EPS = 1e-9", "EPS = 1e-8"),
    ), (T_MENTORING,)),
    Mutant("pair_loss_eps_1e-7", "pair-loss epsilon 1e-7 instead of 1e-9", (
        Edit(MENTORING, "EPS = 1e-9", "EPS = 1e-7"),
    ), (T_MENTORING,)),
    Mutant("ens_min_ascends_mean", "Ens-Min ascends the members' mean instead of their minimum", (
        Edit(SURROGATE, 'return mean.mean(0) if self.aggregate == "mean" else mean.min(0).values',
             "return mean.mean(0)"),
    ), (T_SURROGATE,)),
    Mutant("ascent_step_d", "design-baselines' step 0.01·D instead of 0.01·√D", (
        Edit(SURROGATE, "lr=0.01 * math.sqrt(data.input_dim)", "lr=0.01 * data.input_dim"),
    ), (T_SURROGATE,)),
    Mutant("reported_norm_without_rho", "results report ‖∇h‖ as ρ‖∇h‖ (no ρ)", (
        Edit("lightning_mbo/methods/ignite.py", '"rho_grad_norm": (s.rho * self.norm_ema).tolist()',
             '"rho_grad_norm": self.norm_ema.tolist()'),
    ), (T_SURROGATE,)),
    Mutant("table_mean_is_max", "the benchmark table's mean replaced by the max", (
        Edit("lightning_mbo/table.py", "float(values.mean()), float(values.std())",
             "float(values.max()), float(values.std())"),
    ), ("tests/test_benchmark.py",)),
    Mutant("table_std_constant", "the benchmark table's std replaced by a constant", (
        Edit("lightning_mbo/table.py", "float(values.mean()), float(values.std())", "float(values.mean()), 0.0"),
    ), ("tests/test_benchmark.py",)),
    Mutant("grid_seed_zero", "every grid job run with seed 0", (
        Edit(BENCH, 'f"--seed_everything={seed}", f"--data.seed={seed}",', '"--seed_everything=0", "--data.seed=0",'),
    ), ("tests/test_benchmark.py",)),
    Mutant("ascent_never_moves", "design ascent takes no step", (
        Edit("lightning_mbo/search/gradient.py", "return gradient_ascent(x0, score, budget.steps,",
             "return gradient_ascent(x0, score, 0,"),
    ), (f"{T_SCALE}::test_resume_from_last_checkpoint_matches_uninterrupted_run",)),
    Mutant("rank_never_ascends", "under DDP, ranks other than 0 never ascend", (
        Edit("lightning_mbo/callbacks/design_ascent.py", "result = self._search(searcher, x0[mine],",
             "result = self._search(searcher if rank == 0 else GradientAscent(0, 1.0, 'sgd'), x0[mine],"),
    ), (f"{T_SCALE}::test_two_process_ddp_fit_equals_one_process",)),
    Mutant("resume_skips_best_state", "a resumed run does not restore the best-epoch weights it saved", (
        Edit(SURROGATE, 'self.best.weights = checkpoint.get("best_state")', "self.best.weights = None"),
    ), (f"{T_SCALE}::test_resume_from_last_checkpoint_matches_uninterrupted_run",)),
    Mutant("utr_split_20", "UTR-ResNet-v0's visible split at the 20th percentile (design-bench: 50)", (
        Edit("lightning_mbo/tasks/registry.py", 'name="UTR-ResNet-v0", min_percentile=0, max_percentile=50,',
             'name="UTR-ResNet-v0", min_percentile=0, max_percentile=20,'),
    ), ("tests/tasks/test_registry.py",)),
    Mutant("oracle_first_occurrence", "exact oracle keeps the first occurrence of a design, not the last", (
        Edit("lightning_mbo/tasks/exact/oracle.py", "np.unique(keys[::-1], return_index=True)",
             "np.unique(keys, return_index=True)"),
        Edit("lightning_mbo/tasks/exact/oracle.py", ".reshape(-1)[::-1][rev_first]", ".reshape(-1)[rev_first]"),
    ), ("tests/tasks",)),
    Mutant("split_exclusive", "visible split drops rows equal to the upper percentile", (
        Edit("lightning_mbo/tasks/task.py", "(y >= lo) & (y <= hi)", "(y >= lo) & (y < hi)"),
    ), ("tests/tasks",)),
    Mutant("tfbind10_range", "TFBind10's normalisation minimum rounded", (
        Edit("lightning_mbo/tasks/registry.py", "y_min=-1.8585268, y_max=2.1287067", "y_min=-1.8585, y_max=2.1287067"),
    ), ("tests/tasks",)),
    Mutant("finite_difference_sign", "IGNITE's finite difference reversed: (∇h(ω) − ∇h(ω + r u)) / r", (
        Edit("lightning_mbo/functional/gradnorm.py", "    torch._foreach_sub_(estimate, grads)",
             "    estimate = [g.clone() for g in grads]; torch._foreach_sub_(estimate, shifted)"),
    ), ("tests/functional/test_gradnorm.py",)),
    Mutant("lambda_descends", "IGNITE's λ step descends instead of ascending", (
        Edit("lightning_mbo/functional/dual.py", "new = lmbda.detach() + lr * violation",
             "new = lmbda.detach() - lr * violation"),
    ), ("tests/functional/test_dual.py",)),
    # --- COMs, CbAS, RoMA, ICT, MINs, the continuous tasks' oracles--------------------------------------------
    Mutant("coms_alpha_sign", "COMs' α falls when the over-estimation gap exceeds its limit", (
        Edit(COMS, "dual_objective(alpha, gap - self.hparams.overestimation_limit)",
             "dual_objective(alpha, self.hparams.overestimation_limit - gap)"),
    ), (T_COMS,)),
    Mutant("coms_negatives_descend", "COMs' negatives descend the model instead of climbing it", (
        Edit("lightning_mbo/functional/coms.py", "x = (x + lr * grad).detach()", "x = (x - lr * grad).detach()"),
    ), ("tests/functional/test_coms.py", T_COMS)),
    Mutant("cbas_exceedance_is_cdf", "CbAS weights by P(y < γ) instead of P(y > γ)", (
        Edit(CBAS_F, "return 1.0 - normal.cdf(", "return normal.cdf("),
    ), ("tests/functional/test_cbas.py", "tests/search/test_cbas.py")),
    Mutant("cbas_ratio_inverted", "CbAS's importance ratio q/p instead of p/q", (
        Edit(CBAS_F, "return (log_p - log_q).exp()", "return (log_q - log_p).exp()"),
    ), ("tests/functional/test_cbas.py",)),
    Mutant("roma_step_ascends", "RoMA's weight step climbs its objective", (
        Edit(ROMA_F, "return [w - step * (a / (n + eps)) * g", "return [w + step * (a / (n + eps)) * g"),
    ), ("tests/functional/test_roma.py", T_ROMA)),
    Mutant("roma_region_not_halved", "RoMA's trust region divided by region, not 2·region", (
        Edit(ROMA_F, "return mean - (mean - start_mean) ** 2 / (2 * region)",
             "return mean - (mean - start_mean) ** 2 / region"),
    ), ("tests/functional/test_roma.py",)),
    Mutant("roma_perturbation_kept", "RoMA's weight perturbation is never removed", (
        Edit("lightning_mbo/methods/roma.py", "torch._foreach_sub_(perturbed, perturbation)", "pass"),
    ), (T_ROMA,)),
    Mutant("roma_noise_global_rng", "RoMA's training noise from the global RNG, not each replicate's seed", (
        Edit("lightning_mbo/methods/roma.py", "self.step_normals(x, rows, self.global_step)", "torch.randn_like(x)"),
    ), ("tests/methods/test_stacked_seeds.py::test_replicate_k_is_the_plain_run_of_seed_s_plus_k",)),
    Mutant("tri_noise_one_stream", "Tri-mentoring's replicates draw neighbourhoods from one stream, not their seeds'", (
        Edit(TRI, "torch.Generator().manual_seed(base + r)", "torch.Generator().manual_seed(base)"),
    ), ("tests/methods/test_stacked_seeds.py::test_replicate_k_is_the_plain_run_of_seed_s_plus_k",)),
    Mutant("ict_noise_seed_offset", "ICT's replicate r draws fine-tuning noise from seed·1000003 + r, not seed + r's", (
        Edit("lightning_mbo/methods/ict.py", "manual_seed((seed + int(r)) * 1_000_003)",
             "manual_seed(seed * 1_000_003 + int(r))"),
    ), ("tests/methods/test_stacked_seeds.py::test_replicate_k_is_the_plain_run_of_seed_s_plus_k",)),
    Mutant("coteaching_no_exchange", "ICT's students train on their own small-loss picks, not their peer's", (
        Edit(COTEACH, "return small_loss_indices(losses, n).flip(-2)", "return small_loss_indices(losses, n)"),
    ), (T_COTEACH,)),
    Mutant("meta_weight_ascent", "ICT's sample weights step up the meta gradient", (
        Edit(COTEACH, "(weights - beta * unit.clamp(-clip, clip))", "(weights + beta * unit.clamp(-clip, clip))"),
    ), (T_COTEACH,)),
    Mutant("ict_released_loss_is_fixed", "ICT's released (Σw)(Σℓ)/n broadcast replaced by Σwℓ/n", (
        Edit(COTEACH, "        return weights.sum(-1) * losses.sum(-1) / n",
             "        return (weights * losses).sum(-1) / n"),
    ), (T_COTEACH,)),
    Mutant("ict_path_from_worst", "ICT's fine-tuning path starts at the worst design", (
        Edit("lightning_mbo/methods/ict.py", "start = x[y.argmax()]", "start = x[y.argmin()]"),
    ), ("tests/methods/test_ict.py",)),
    Mutant("ant_forward_sign", "the Ant's forward reward has the wrong sign", (
        Edit(MORPH_ENV, "forward_reward = (x_after - x_before) / dt", "forward_reward = (x_before - x_after) / dt"),
    ), (T_MORPH,)),
    Mutant("legs_not_clipped", "morphology designs are not clipped to the legs' bounds", (
        Edit("lightning_mbo/tasks/morphology/rollout.py",
             "return np.clip(x.reshape(len(x), n_legs, fields), self.robot.lower, self.robot.upper)",
             "return x.reshape(len(x), n_legs, fields)"),
    ), (T_MORPH,)),
    Mutant("policy_no_relu", "the morphology policy loses its second ReLU", (
        Edit("lightning_mbo/tasks/morphology/policy.py", "h = np.maximum(0.0, w2 @ h + b2)", "h = w2 @ h + b2"),
    ), (T_MORPH,)),
    Mutant("mins_condition_ignored", "MINs' generator ignores the score it is conditioned on", (
        Edit("lightning_mbo/generative/gan.py", "e = self.embed(y.reshape(-1, 1).to(a))",
             "e = self.embed(0 * y.reshape(-1, 1).to(a))"),
    ), ("tests/search/test_mins.py",)),
    Mutant("mins_penalty_not_one", "MINs' gradient penalty pulls the critic's gradient norm to 0, not 1", (
        Edit(MINS_F, "return (1.0 - grad.flatten(1).norm(dim=-1)) ** 2", "return grad.flatten(1).norm(dim=-1) ** 2"),
    ), ("tests/functional/test_mins.py",)),
    Mutant("mins_weights_unclipped", "MINs' sample weights not clipped at 5", (
        Edit(MINS_F, ".clamp(0.0, max_weight)", ".clamp(0.0)"),
    ), ("tests/functional/test_mins.py",)),
    Mutant("mins_sampled_at_min", "MINs samples its designs at the worst score", (
        Edit("lightning_mbo/search/mins.py", "final = encode(sample(exploit, y.max(), n))",
             "final = encode(sample(exploit, y.min(), n))"),
    ), ("tests/search/test_mins.py",)),
    Mutant("forest_x_unscaled", "the Superconductor forest's designs not divided by their std", (
        Edit("lightning_mbo/tasks/forest/oracle.py", "z = (x - self.norm.x_mean) / self.norm.x_std",
             "z = x - self.norm.x_mean"),
    ), ("tests/tasks/test_superconductor.py",)),
    # --- the newer baselines' released settings, the comparison and the runner ---------------
    Mutant("cma_sigma_0.3", "CMA-ES starts with step size 0.3 instead of the released 0.5", (
        Edit(CMA, "sigma: float = 0.5, iterations: int = 100", "sigma: float = 0.3, iterations: int = 100"),
    ), (T_RELEASED + "::test_cma_es_sigma_and_default_population",)),
    Mutant("cma_iterations_50", "CMA-ES runs 50 iterations instead of the released 100", (
        Edit(CMA, "sigma: float = 0.5, iterations: int = 100", "sigma: float = 0.5, iterations: int = 50"),
    ), (T_RELEASED + "::test_cma_es_released_defaults",)),
    Mutant("cma_fixed_popsize", "CMA-ES with a fixed population of 12, not cma's 4 + floor(3 ln D)", (
        Edit(CMA, '**({"popsize": self.popsize} if self.popsize else {})', '"popsize": self.popsize or 12'),
    ), (T_RELEASED + "::test_cma_es_sigma_and_default_population",)),
    Mutant("cma_returns_own_best", "CMA-ES returns its own bookkeeping's best, not cma's xbest", (
        Edit(CMA, "np.stack([es.result.xbest if es.result.xbest", "np.stack([best_x[i] if es.result.xbest"),
    ), (T_RELEASED + "::test_cma_es_returns_cmas_xbest",)),
    Mutant("cma_returns_mean", "CMA-ES returns the distribution's mean, not the best point seen", (
        Edit(CMA, "np.stack([es.result.xbest if es.result.xbest", "np.stack([es.mean if es.result.xbest"),
    ), (T_RELEASED + "::test_cma_es_returns_cmas_xbest",)),
    Mutant("bo_qei_no_label_noise", "BO-qEI labels proposals with the bare prediction (no N(0, 0.1^2))", (
        Edit(BO, "new_y = pred + self.label_noise_std * torch.randn",
             "new_y = pred + 0 * self.label_noise_std * torch.randn"),
    ), (T_RELEASED + "::test_bo_qei_labels_proposals_with_prediction_plus_n0_01_noise",)),
    Mutant("bo_qei_noise_0.01", "BO-qEI label noise std 0.01 instead of 0.1", (
        Edit(BO, "label_noise_std: float = 0.1,", "label_noise_std: float = 0.01,"),
    ), (T_RELEASED + "::test_bo_qei_released_defaults",)),
    Mutant("reinforce_batch_128", "REINFORCE draws 128 samples per update on discrete tasks, not 256", (
        Edit(REINFORCE, "self.batch or 256", "self.batch or 128"),
    ), (T_RELEASED + "::test_reinforce_samples_per_update",)),
    Mutant("reinforce_batch_1024", "REINFORCE draws 1024 samples per update on continuous tasks, not 2048", (
        Edit(REINFORCE, "self.batch or 2048", "self.batch or 1024"),
    ), (T_RELEASED + "::test_reinforce_samples_per_update",)),
    Mutant("reinforce_iterations_100", "REINFORCE trains 100 iterations instead of 200", (
        Edit(REINFORCE, "iterations: int = 200, batch", "iterations: int = 100, batch"),
    ), (T_RELEASED + "::test_reinforce_released_defaults",)),
    Mutant("reinforce_lr_0.001", "REINFORCE's Adam lr 0.001 instead of 0.01", (
        Edit(REINFORCE, "lr: float = 0.01, sigma", "lr: float = 0.001, sigma"),
    ), (T_RELEASED + "::test_reinforce_adam_lr_is_released_0_01",)),
    Mutant("head_max_logstd_0.3", "Gaussian head's upper log-std bound starts at log 0.3, not log 0.2", (
        Edit(SURROGATE, "torch.full((members, 1), math.log(0.2))", "torch.full((members, 1), math.log(0.3))"),
    ), (T_REL_SURR + "::test_gaussian_head_soft_bounds_start_at_log_0_1_and_log_0_2",)),
    Mutant("head_min_logstd_0.05", "Gaussian head's lower log-std bound starts at log 0.05, not log 0.1", (
        Edit(SURROGATE, "torch.full((members, 1), math.log(0.1))", "torch.full((members, 1), math.log(0.05))"),
    ), (T_REL_SURR + "::test_gaussian_head_soft_bounds_start_at_log_0_1_and_log_0_2",)),
    Mutant("head_hard_lower_clamp", "Gaussian head clamps the log-std hard at its lower bound, not softly", (
        Edit(SURROGATE, "logstd = low + F.softplus(logstd - low)", "logstd = torch.maximum(logstd, low)"),
    ), (T_REL_SURR + "::test_gaussian_head_soft_bounds_start_at_log_0_1_and_log_0_2",)),
    Mutant("coms_model_eps_torch", "COMs' model Adam with torch's eps 1e-8, not Keras' 1e-7", (
        Edit(COMS, "adam(model, lr=self.hparams.lr, eps=self.adam_eps)", "adam(model, lr=self.hparams.lr, eps=1e-8)"),
    ), (T_REL_SURR + "::test_coms_optimizers_use_keras_epsilon",)),
    Mutant("coms_alpha_eps_torch", "COMs' log-alpha Adam with torch's eps 1e-8, not Keras' 1e-7", (
        Edit(COMS, "lr=self.hparams.alpha_lr, eps=self.adam_eps)", "lr=self.hparams.alpha_lr, eps=1e-8)"),
    ), (T_REL_SURR + "::test_coms_optimizers_use_keras_epsilon",)),
    Mutant("best_epoch_nan_as_zero", "best-epoch selection counts a NaN Pearson as 0, not -1", (
        Edit(BEST, "nan=-1.0", "nan=0.0"),
    ), (T_REL_SURR + "::test_best_epoch_keeps_each_members_best_and_nan_counts_as_minus_one",)),
    Mutant("best_epoch_nan_never_kept",
           "best-epoch selection counts a NaN Pearson as -inf (an all-NaN member keeps nothing)", (
        Edit(BEST, "nan=-1.0", "nan=-math.inf"),
    ), (T_REL_SURR + "::test_best_epoch_an_all_nan_member_keeps_its_first_epoch",)),
    Mutant("best_epoch_tie_takes_later", "best-epoch selection takes the later epoch on a tie", (
        Edit(BEST, "better = scores > self.score", "better = scores >= self.score"),
    ), (T_REL_SURR + "::test_best_epoch_a_tie_keeps_the_earlier_epoch",)),
    Mutant("unchanged_two_decimals", "the comparison calls means unchanged when they agree to 2 decimals, not 3", (
        Edit(COMPARISON, '_mean"], 3) == round(self.ignite', '_mean"], 2) == round(self.ignite'),
    ), (T_RULES,)),
    Mutant("gain_divides_by_signed_base", "the gain divides by the baseline's signed mean (sign flips when negative)", (
        Edit(COMPARISON, "100.0 * (i - b) / abs(b)", "100.0 * (i - b) / b"),
    ), (T_RULES,)),
    Mutant("start_score_from_labels", "the starting designs' score is the dataset's labels, not the oracle", (
        Edit(ASCENT, "datamodule.score(task.top_k(self.num_candidates)[0])", "task.top_k(self.num_candidates)[1]"),
    ), (T_OUTPUTS + "::test_start_score_is_the_oracle_on_the_unmodified_top_designs",)),
    Mutant("replicate_rows_share_prediction", "every replicate's row reports the predicted score of all candidates", (
        Edit(ASCENT, '"mean_predicted_final": float(pred[-1, idx].mean())',
             '"mean_predicted_final": float(pred[-1].mean())'),
    ), (T_OUTPUTS + "::test_each_replicate_row_carries_its_own_predicted_scores",)),
    Mutant("runner_key_first_line",
           "the runner reuses a finished run when only the resolved config's first line matches", (
        Edit(BENCH, "    if saved == resolved:", "    if saved.splitlines()[:1] == resolved.splitlines()[:1]:"),
    ), (T_RUNNER + "::test_runner_reuses_refuses_and_reruns_by_resolved_config",)),
    Mutant("runner_ignores_changed", "the runner reruns a changed run without --rerun_changed", (
        Edit(BENCH, "    if not rerun:\n", "    if False:\n"),
    ), (T_RUNNER + "::test_runner_reuses_refuses_and_reruns_by_resolved_config",)),
    Mutant("checkpoint_ignores_activation", "a checkpoint of another activation is accepted", (
        Edit("lightning_mbo/checkpoint.py", '"hidden", "activation", "head"', '"hidden", "head"'),
    ), (T_RUNNER + "::test_checkpoint_of_other_network_settings_is_refused",)),
    Mutant("ascent_lr_zero_accepted", "--ascent.lr 0 is accepted by the callback and the search settings", (
        Edit("lightning_mbo/search/gradient.py", 'check_range("--ascent.lr", lr, 0, strict=True',
             'check_range("--ascent.lr", lr, 0, strict=False'),
        Edit("lightning_mbo/search/contract.py", "self.lr, 0, strict=True", "self.lr, 0, strict=False"),
    ), (T_LR0 + "::test_callback_and_search_settings_refuse_a_zero_step",)),
    Mutant("search_settings_lr_zero_accepted", "a method's search settings accept a step size of 0", (
        Edit("lightning_mbo/search/contract.py", "self.lr, 0, strict=True", "self.lr, 0, strict=False"),
    ), (T_LR0 + "::test_callback_and_search_settings_refuse_a_zero_step",)),
    Mutant("bo_qei_gp_noise_free", "BO-qEI's GP fitted with observation noise 1e-6 instead of 0.01", (
        Edit(BO, "train_Yvar=torch.full_like(train_y, self.observation_noise)",
             "train_Yvar=torch.full_like(train_y, 1e-6)"),
    ), (T_RELEASED + "::test_bo_qei_labels_proposals_with_prediction_plus_n0_01_noise",)),
    Mutant("reinforce_sigma_ignored", "REINFORCE's continuous policy samples with std 1, not sigma (0.1)", (
        Edit(REINFORCE, "x = mean.detach() + self.sigma * noise", "x = mean.detach() + noise"),
    ), (T_RELEASED + "::test_reinforce_continuous_policy_samples_with_std_0_1_around_the_top_mean",)),
    Mutant("coms_default_eps_torch", "COMs' default Adam epsilon torch's 1e-8, not Keras' 1e-7", (
        Edit(COMS, "adam_eps: float = 1e-7,", "adam_eps: float = 1e-8,"),
    ), (T_REL_SURR + "::test_coms_optimizers_use_keras_epsilon",)),
    Mutant("coms_search_steps_20", "COMs searches 20 steps, not the released 50", (
        Edit(COMS, "SEARCH_STEPS = 50", "SEARCH_STEPS = 20"),
    ), (T_REL_SURR + "::test_coms_released_defaults",)),
    Mutant("hparams_keep_fixed_settings",
           "a subclass's hparams keep the settings it fixes (its checkpoint cannot reload)", (
        Edit(SURROGATE, "                                          if k not in accepted])",
             "                                          if False])"),
    ), ("tests/methods/test_extending_example.py",)),
    Mutant("gradient_defaults_win", "the method's search defaults override what --ascent.* set", (
        Edit("lightning_mbo/search/gradient.py", "GradientAscent(**{**defaults.as_dict(), **given})",
             "GradientAscent(**{**given, **defaults.as_dict()})"),
    ), ("tests/search/test_gradient.py",)),
    Mutant("gradient_prefixes_results", "gradient ascent's results named gradient_ascent/<method>", (
        Edit("lightning_mbo/search/gradient.py", "return method  # the methods' own search",
             'return f"{self.name}/{method}"'),
    ), ("tests/search/test_gradient.py",)),
    Mutant("download_keeps_by_existence", "data download keeps present files without checking their checksum", (
        Edit("lightning_mbo/tasks/commands/download.py", "        if checksum_ok(local, remote):",
             "        if local.is_file():"),
    ), ("tests/tasks/test_download.py",)),
)


def check_applicable(mutant: Mutant) -> list[str]:
    """Problems with a mutant's edits on the current tree (empty when it applies cleanly)."""
    problems = []
    for edit in mutant.edits:
        path = ROOT / edit.path
        if not path.is_file():
            problems.append(f"{mutant.name}: {edit.path} does not exist")
            continue
        count = path.read_text().count(edit.old)
        if count != 1:
            problems.append(f"{mutant.name}: {edit.old!r} occurs {count} times in {edit.path} (must be once)")
        if edit.old == edit.new:
            problems.append(f"{mutant.name}: an edit changes nothing")
    return problems


def run_mutant(mutant: Mutant, full: bool) -> tuple[bool, float]:
    """Apply, run the tests, restore; returns (killed, seconds)."""
    originals: dict[Path, str] = {}
    try:
        for edit in mutant.edits:
            path = ROOT / edit.path
            originals.setdefault(path, path.read_text())
            path.write_text(path.read_text().replace(edit.old, edit.new, 1))
        tests = [] if full else list(mutant.tests)
        with tempfile.TemporaryDirectory() as cache:
            # A fresh bytecode cache: a mutant of the same size written within the same second
            # as the original must not be served from a stale .pyc.
            env = {**os.environ, "PYTHONPYCACHEPREFIX": cache}
            start = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                cwd=ROOT, env=env, capture_output=True, text=True, check=False,
            )
        seconds = time.perf_counter() - start
        if proc.returncode == 5:
            raise RuntimeError(f"{mutant.name}: no tests collected from {tests}")
        return proc.returncode != 0, seconds
    finally:
        for path, text in originals.items():
            path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-k", default="", help="run only mutants whose name contains this")
    parser.add_argument("--full", action="store_true", help="run the whole default suite for each mutant")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    args = parser.parse_args(argv)
    selected = [m for m in MUTANTS if args.k in m.name]
    if args.list:
        for m in selected:
            print(f"{m.name}: {m.bug}  [{', '.join(m.tests)}]")
        return 0
    problems = [p for m in selected for p in check_applicable(m)]
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 2
    survivors = []
    for m in selected:
        killed, seconds = run_mutant(m, args.full)
        print(f"{'killed  ' if killed else 'SURVIVED'} {m.name:<28} {seconds:6.1f} s  {m.bug}", flush=True)
        if not killed:
            survivors.append(m.name)
    print(f"{len(selected) - len(survivors)} of {len(selected)} mutants killed"
          + (f"; survivors: {', '.join(survivors)}" if survivors else ""))
    return 1 if survivors else 0


if __name__ == "__main__":
    raise SystemExit(main())
