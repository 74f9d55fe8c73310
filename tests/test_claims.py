"""python -m lossbench.claims: the protocols compose, the per-run measurements the claims read match hand computations,
the data options the protocols need do what they say, the verdict rules give the verdicts synthetic results were built
for, and ``--quick`` on tiny generated data writes every section, verdict and figure (and a re-run reuses every job)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import ENV, compose, tiny_overrides
from hydra.utils import instantiate
from idx import write_indexed_family, write_mnist_family

from lossbench import analysis
from lossbench.claims import evaluate, rules, write
from lossbench.claims.protocols import CLAIMS, PROTOCOLS, design
from lossbench.claims.results import METRICS
from lossbench.claims.rules import Case
from lossbench.config import validate
from lossbench.metrics import confidence, input_margins, logit_margins, margins
from lossbench.noise import corrupt_images

FULL_JOBS = {
    "claim_losses": 50,
    "claim_binary": 20,
    "claim_outliers": 36,
    "claim_label_noise": 20,
    "claim_overfitting": 60,
}
QUICK_JOBS = {
    "claim_losses": 10,
    "claim_binary": 4,
    "claim_outliers": 12,
    "claim_label_noise": 8,
    "claim_overfitting": 20,
}

# ------------------------------------------------------------------------------------------ protocols


@pytest.mark.parametrize("name", sorted(PROTOCOLS))
def test_each_protocol_composes_into_the_grid_its_header_promises(name: str) -> None:
    cfg = compose(f"+experiment={name}", hydra_config=True)
    validate(cfg)
    assert cfg.tracking.experiment == name and cfg.data.name == "fashion_mnist" and cfg.threads == 1
    full, quick = design(PROTOCOLS[name], [], False), design(PROTOCOLS[name], [], True)
    assert full.jobs == FULL_JOBS[name] and quick.jobs == QUICK_JOBS[name]
    assert len(quick.grid["seed"]) == 2 < 3 <= len(full.grid["seed"])
    assert quick.fixed["epochs"] < full.fixed["epochs"]
    assert quick.fixed["training images"] < full.fixed["training images"]


def test_every_claim_is_tested_by_a_protocol_and_the_user_overrides_win() -> None:
    assert [c.number for c in CLAIMS] == list(range(1, 9))
    assert all(set(c.protocols) <= set(PROTOCOLS) for c in CLAIMS)
    binary = design(PROTOCOLS["claim_binary"], ["trainer.max_epochs=2", "seed=range(0,5)"], True)
    assert binary.fixed["epochs"] == 2 and binary.grid["seed"] == ["0", "1", "2", "3", "4"]
    assert binary.fixed["data"] == "fashion_mnist, classes [0, 6] relabelled"
    assert compose("+experiment=claim_binary").model.net.num_classes == 2


# ------------------------------------------------------------------------------------------ the data options


def test_data_classes_keeps_those_classes_relabelled_in_their_order(tmp_path: Path) -> None:
    written = write_indexed_family(tmp_path, "MNIST", 600, 200)
    node = compose("data=mnist").data
    dm = instantiate(
        node, root=str(tmp_path), download=False, val_size=20, train_eval_size=10, classes=[6, 0], num_classes=2
    )
    s = dm.load()
    test_labels = written["test"][1]
    expected = np.where(test_labels[np.isin(test_labels, [6, 0])] == 6, 0, 1)  # 6 -> 0, 0 -> 1
    assert s.test_y.tolist() == expected.tolist()
    assert set(s.train_y.tolist()) == {0, 1} and len(s.train_y) + 20 == int(np.isin(written["train"][1], [0, 6]).sum())


def test_input_noise_corrupts_exactly_its_share_of_training_images_and_nothing_else(tmp_path: Path) -> None:
    write_indexed_family(tmp_path, "MNIST", 600, 200)
    node = compose("data=mnist").data
    kw = {"root": str(tmp_path), "download": False, "val_size": 100, "train_eval_size": 50}
    clean = instantiate(node, **kw).load()
    noisy = instantiate(node, **kw, input_noise={"rate": 0.4, "kind": "uniform", "seed": 0}).load()
    changed = (clean.train_x != noisy.train_x).flatten(1).any(dim=1)
    assert int(changed.sum()) == 200  # round(0.4 x 500 training images)
    assert torch.equal(clean.val_x, noisy.val_x) and torch.equal(clean.test_x, noisy.test_x)
    assert torch.equal(clean.train_y, noisy.train_y), "a corrupted image keeps its label"


def test_corrupt_images_depends_on_its_own_seed_only() -> None:
    images = torch.zeros(50, 1, 4, 4, dtype=torch.uint8)
    a, report = corrupt_images(images, 0.3, "uniform", seed=1)
    b, _ = corrupt_images(images, 0.3, "uniform", seed=1)
    c, _ = corrupt_images(images, 0.3, "uniform", seed=2)
    assert report.corrupted == 15 and int(a.flatten(1).any(dim=1).sum()) == 15
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert int(images.sum()) == 0, "the input is left untouched"


# ------------------------------------------------------------------------------------------ per-run metrics

LOGITS = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 1.0, 4.0], [5.0, 0.0, 0.0], [0.0, 0.2, 0.1]])
TARGET = torch.tensor([0, 2, 2, 1, 1])


def test_logit_margins_and_their_percentiles_by_hand() -> None:
    # z_y - max other: 2-1, 1-3, 4-1, 0-5, 0.2-0.1
    expected = [1.0, -2.0, 3.0, -5.0, 0.1]
    assert logit_margins(LOGITS, TARGET).tolist() == pytest.approx(expected)
    distances = torch.tensor([0.5, -1.0, 2.0, -3.0, 0.25])
    got = {k: float(v) for k, v in margins(LOGITS, TARGET, distances).items()}
    ordered = sorted(expected)  # -5, -2, 0.1, 1, 3: linear interpolation between order statistics, as numpy
    assert got["margin_q50"] == pytest.approx(0.1)
    assert got["margin_q25"] == pytest.approx(-2.0) and got["margin_q75"] == pytest.approx(1.0)
    assert got["margin_q10"] == pytest.approx(ordered[0] + 0.4 * (ordered[1] - ordered[0]))
    assert got["margin_ge1"] == pytest.approx(2 / 5)  # 1.0 and 3.0
    assert got["input_margin_q50"] == pytest.approx(0.25)


def test_input_margin_of_a_linear_model_is_the_exact_distance_to_the_boundary() -> None:
    net = torch.nn.Linear(2, 3, bias=True)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]))
        net.bias.zero_()
    x, y = torch.tensor([[3.0, 1.0], [1.0, 2.0]]), torch.tensor([0, 0])
    logits, distance = input_margins(net, x, y)
    # image 1: z = (3, 1, -4), margin 2 against class 1, |w0 - w1| = sqrt(2); image 2: z = (1, 2, -3), margin -1
    assert torch.equal(logits, net(x).detach())
    assert distance.tolist() == pytest.approx([2 / math.sqrt(2), -1 / math.sqrt(2)])


def test_input_margin_is_the_nearest_boundary_over_all_classes_not_the_runner_ups() -> None:
    """The runner-up (class 1, logit 0) has its boundary at distance 1.0; class 2's logit is lower (-0.01) but its
    weights differ far more from class 0's, and its boundary lies at 1.01 / 6.824 = 0.148: the SVM's margin is that."""
    net = torch.nn.Linear(2, 3, bias=True)
    w = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 6.824]])
    b = torch.tensor([0.0, 0.0, -1.01])
    with torch.no_grad():
        net.weight.copy_(w)
        net.bias.copy_(b)
    x, y = torch.tensor([[1.0, 0.0]]), torch.tensor([0])
    logits, distance = input_margins(net, x, y)
    assert logits[0].tolist() == pytest.approx([1.0, 0.0, -0.01]) and logit_margins(logits, y).tolist() == [1.0]
    runner_up = (1.0 - 0.0) / float((w[0] - w[1]).norm())
    nearest = (1.0 + 0.01) / float((w[0] - w[2]).norm())
    assert runner_up == pytest.approx(1.0) and nearest == pytest.approx(0.148, abs=5e-4)
    assert float(distance) == pytest.approx(nearest, rel=1e-5)
    # the point that distance away along (w2 - w0) lies on the boundary z0 = z2, and no boundary is nearer
    on_boundary = x + float(distance) * (w[2] - w[0]) / (w[2] - w[0]).norm()
    z = net(on_boundary).detach()[0]
    assert float(z[0]) == pytest.approx(float(z[2]), abs=1e-5) and float(z[0]) > float(z[1])


def test_input_margin_of_a_network_is_the_first_order_distance_per_class_minimised() -> None:
    """An MLP: each image's margin, against the Jacobian taken class by class with torch.autograd.functional."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 4)).eval()
    x, y = torch.randn(6, 5), torch.tensor([0, 1, 2, 3, 0, 1])
    _, distance = input_margins(net, x, y)
    for i in range(6):
        jac = torch.autograd.functional.jacobian(net, x[i])  # (4, 5)
        z = net(x[i]).detach()
        others = [j for j in range(4) if j != int(y[i])]
        expected = min(float((z[y[i]] - z[j]) / (jac[y[i]] - jac[j]).norm()) for j in others)
        assert float(distance[i]) == pytest.approx(expected, rel=1e-5)


CAL_LOGITS = np.array([[2.0, 0.0, -1.0], [0.5, 1.5, -0.5], [-1.0, 0.0, 3.0], [1.0, 1.2, 0.8]])
CAL_TARGET = np.array([0, 0, 2, 1])


def _sigmoid_normalised(z: np.ndarray) -> np.ndarray:
    q = 1 / (1 + np.exp(-z))
    return q / q.sum(axis=1, keepdims=True)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _nll(p: np.ndarray, y: np.ndarray) -> float:
    return float(-np.log(p[np.arange(len(y)), y]).mean())


def _ece(p: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error: equal-width bins of the top probability, |accuracy - confidence| weighted."""
    conf, hit = p.max(axis=1), (p.argmax(axis=1) == y)
    which = np.minimum((conf * bins).astype(int), bins - 1)
    return float(sum(abs(hit[which == b].mean() - conf[which == b].mean()) * (which == b).mean() for b in set(which)))


def test_each_loss_is_scored_on_its_own_probabilities_by_hand() -> None:
    from lossbench.metrics import calibration, own_log_probs

    z, y = torch.tensor(CAL_LOGITS), torch.tensor(CAL_TARGET)
    sig = _sigmoid_normalised(CAL_LOGITS)
    np.testing.assert_allclose(own_log_probs(z, "sigmoid").exp().numpy(), sig, rtol=1e-6)
    np.testing.assert_allclose(own_log_probs(z, "softmax").exp().numpy(), _softmax(CAL_LOGITS), rtol=1e-6)
    got = {k: float(v) for k, v in calibration(z, y, "sigmoid").items()}
    assert got == pytest.approx({"own_nll": _nll(sig, CAL_TARGET), "own_ece": _ece(sig, CAL_TARGET)}, rel=1e-5)
    soft = {k: float(v) for k, v in calibration(z, y, "softmax").items()}
    assert soft["own_nll"] == pytest.approx(_nll(_softmax(CAL_LOGITS), CAL_TARGET), rel=1e-5)
    assert soft["own_nll"] == pytest.approx(float(torch.nn.functional.cross_entropy(z.float(), y)), rel=1e-6)
    assert soft["own_nll"] != pytest.approx(got["own_nll"], rel=1e-3), "sigmoids and softmax are other distributions"


@pytest.mark.parametrize("form, probs", [("softmax", _softmax), ("sigmoid", _sigmoid_normalised)])
def test_temperature_scaling_minimises_the_validation_nll_and_is_applied_to_the_test_logits(form, probs) -> None:
    from scipy.optimize import minimize_scalar

    from lossbench.metrics import calibration, fit_temperature

    rng = np.random.default_rng(0)
    val_y = rng.integers(0, 3, 200)
    val_z = rng.normal(size=(200, 3)) * 2 + 4 * np.eye(3)[val_y] * (rng.random(200) < 0.7)[:, None]
    best = minimize_scalar(lambda log_t: _nll(probs(val_z / np.exp(log_t)), val_y), bounds=(-4, 4), method="bounded")
    t = float(fit_temperature(torch.tensor(val_z), torch.tensor(val_y), form))
    assert t == pytest.approx(np.exp(best.x), rel=1e-3) and t != pytest.approx(1.0, abs=0.05)
    got = calibration(
        torch.tensor(CAL_LOGITS), torch.tensor(CAL_TARGET), form, (torch.tensor(val_z), torch.tensor(val_y))
    )
    scaled = probs(CAL_LOGITS / t)
    assert float(got["own_nll_ts"]) == pytest.approx(_nll(scaled, CAL_TARGET), rel=1e-4)
    assert float(got["own_ece_ts"]) == pytest.approx(_ece(scaled, CAL_TARGET), rel=1e-4)
    t_softmax = float(fit_temperature(torch.tensor(val_z), torch.tensor(val_y), "softmax"))
    separated = float(fit_temperature(torch.tensor(np.eye(3)[val_y]), torch.tensor(val_y), form))
    assert 0.05 <= separated < 0.2, "a perfectly separated validation set sends T down, never below 0.05"
    assert float(got["nll_ts"]) == pytest.approx(_nll(_softmax(CAL_LOGITS / t_softmax), CAL_TARGET), rel=1e-4)
    assert float(got["ece_ts"]) == pytest.approx(_ece(_softmax(CAL_LOGITS / t_softmax), CAL_TARGET), rel=1e-4)


def test_confidence_of_wrong_predictions_and_what_ce_gives_them_by_hand() -> None:
    got = {k: float(v) for k, v in confidence(LOGITS, TARGET, F.cross_entropy).items()}
    p = LOGITS.softmax(dim=1)
    top, pred = p.max(dim=1)
    wrong = pred != TARGET  # images 2 and 4 (0-based 1 and 3)
    assert wrong.tolist() == [False, True, False, True, False]
    flagged = [i for i in range(5) if wrong[i] and top[i] >= 0.9]  # image 4: softmax(5, 0, 0) tops 0.987
    assert flagged == [3]
    per_image = [-math.log(float(p[i, TARGET[i]])) for i in range(5)]
    grads = [float((p[i] - F.one_hot(TARGET[i], 3)).norm()) for i in range(5)]  # d CE / d z = softmax - one-hot
    assert got["wrong_conf"] == pytest.approx(float(top[wrong].mean()))
    assert got["confident_wrong"] == pytest.approx(1 / 5)
    assert got["confident_wrong_loss"] == pytest.approx(per_image[3] / np.mean(per_image), rel=1e-5)
    assert got["confident_wrong_grad"] == pytest.approx(grads[3] / np.mean(grads), rel=1e-5)


def test_no_confident_mistake_gives_nan_not_zero() -> None:
    got = confidence(torch.tensor([[0.0, 0.1], [0.3, 0.0]]), torch.tensor([0, 0]), F.cross_entropy)
    assert float(got["confident_wrong"]) == 0.0
    assert math.isnan(float(got["confident_wrong_loss"])) and math.isnan(float(got["confident_wrong_grad"]))


def test_epochs_and_seconds_to_the_target_by_hand() -> None:
    curves = {"val/acc": [0.5, 0.79, 0.81, 0.9], "time/epoch_s": [1.0, 2.0, 3.0, 4.0]}
    assert analysis.epochs_to(curves, 0.8) == 3 and analysis.seconds_to(curves, 3) == 6.0
    assert analysis.epochs_to(curves, 0.95) is None and math.isnan(analysis.seconds_to(curves, None))
    figures = analysis.summary_figures(
        curves | {"val/nll": [1.0] * 4, "train_eval/nll": [1.0] * 4}, analysis.Rule(target_acc=0.9)
    )
    assert figures["epochs_to_target"] == 4 and figures["seconds_to_target"] == 10.0


def test_the_overfitting_rule_read_on_the_own_loss() -> None:
    falling = [1.0 - 0.05 * e for e in range(12)]
    rising = [1.0, 0.8, 0.6, 0.5, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85]
    epochs = {"val/acc": [0.8] * 12}  # a run's last epoch is its last validation result
    overfits = analysis.own_loss_figures({"val/loss": rising, "train_eval/loss": falling, **epochs}, analysis.Rule())
    assert overfits["loss_has_onset"] == 1.0 and overfits["loss_onset_epoch"] in (4, 5)
    assert overfits["loss_rise"] == pytest.approx((0.8 - 0.5) / 0.5, abs=0.06)  # smoothed over 3 epochs
    flat = analysis.own_loss_figures({"val/loss": [0.5] * 12, "train_eval/loss": falling, **epochs}, analysis.Rule())
    assert flat["loss_has_onset"] == 0.0 and "loss_onset_epoch" not in flat


# ------------------------------------------------------------------------------------------ rules


def run_row(protocol: str, loss: str, model: str, seed: int, **values) -> dict:
    """One run of the tidy table, as lossbench.claims.results writes it; metrics NaN unless given."""
    row = {
        "protocol": protocol,
        "run_id": f"{protocol}-{loss}-{model}-{seed}",
        "run": f"{loss}-{model}-s{seed}",
        "loss": loss,
        "model": model,
        "seed": str(seed),
        "test_images": 10000,
        "label_noise": 0.0,
        "input_noise": 0.0,
        "classes": 10,
        "max_epochs": 15.0,
        "target_acc": 0.8,
        "stage": 1,
        **{m: math.nan for m in METRICS},
    }
    row.update({k.replace("__", "/"): v for k, v in values.items()})
    return row


def epochs_table(mae: dict[str, list[float]], mse: dict[str, list[float]]) -> list[dict]:
    return [
        run_row("claim_losses", loss, model, seed, summary__epochs_to_target=value)
        for loss, by_model in (("mae", mae), ("mse", mse))
        for model, values in by_model.items()
        for seed, value in enumerate(values)
    ]


def test_claim_2_supported_contradicted_and_undecided_on_synthetic_results() -> None:
    slow = [7.0, 8.0, 9.0, 8.0, 7.0]
    fast = [2.0, 3.0, 2.0, 3.0, 2.0]
    supported = evaluate.claim_2(epochs_table({"linear": slow, "mlp": slow}, {"linear": fast, "mlp": fast}))
    contradicted = evaluate.claim_2(epochs_table({"linear": fast, "mlp": fast}, {"linear": slow, "mlp": slow}))
    noisy = [3.0, 8.0, 2.0, 9.0, 4.0]
    undecided = evaluate.claim_2(
        epochs_table({"linear": noisy, "mlp": noisy}, {"linear": noisy[::-1], "mlp": noisy[::-1]})
    )
    assert supported.verdict.kind == rules.SUPPORTED and [t.outcome for t in supported.tested] == [rules.HOLDS] * 2
    assert contradicted.verdict.kind == rules.CONTRADICTED
    assert undecided.verdict.kind == rules.INCONCLUSIVE and "more seeds" in undecided.verdict.decide
    mean = supported.tested[0].decision.paired.mean
    assert mean == pytest.approx(np.mean(slow) - np.mean(fast))
    assert "RULE" not in supported.verdict.rule and "Holm" in supported.verdict.rule


def test_a_run_that_never_reaches_the_target_counts_one_epoch_past_its_last() -> None:
    rows = epochs_table({"linear": [math.nan, 5.0, 6.0]}, {"linear": [2.0, 2.0, 3.0]})
    censored = rules.with_censored_epochs(rows)
    assert [r[rules.EPOCHS_TO_TARGET] for r in censored[:3]] == [16.0, 5.0, 6.0]
    finding = evaluate.claim_2(rows)
    assert any("1 of 3 mae runs never reached it" in n for n in finding.notes)


def test_claim_4_depends_on_the_model_and_says_so() -> None:
    rows = []
    for seed in range(4):
        for loss, linear, mlp in (("hinge", 2.0, 1.0), ("ce", 1.0, 2.0), ("mse", 1.1, 2.1)):
            jitter = 0.01 * seed
            rows.append(run_row("claim_losses", loss, "linear", seed, test__input_margin_q50=linear + jitter))
            rows.append(
                run_row("claim_losses", loss, "mlp", seed, test__input_margin_q50=mlp - jitter * (loss == "hinge"))
            )
    finding = evaluate.claim_4(rows)
    assert finding.verdict.kind == rules.DEPENDS
    assert finding.verdict.text == "depends on model: holds for linear; reversed for mlp"


def test_what_would_decide_a_prediction_is_said_in_its_own_unit() -> None:
    rows = []
    for seed, (hinge, ce) in enumerate([(1.00, 1.10), (1.20, 1.02), (1.05, 1.13), (1.31, 1.25), (0.90, 0.95)]):
        rows.append(run_row("claim_losses", "hinge", "linear", seed, test__input_margin_q50=hinge))
        rows.append(run_row("claim_losses", "ce", "linear", seed, test__input_margin_q50=ce))
        rows.append(run_row("claim_losses", "mse", "linear", seed, test__input_margin_q50=ce))
    (first, _) = evaluate.claim_4(rows).tested
    assert first.outcome == rules.UNDECIDED and first.decision.plan.extra is None
    assert (
        first.plan == "more than 100 more seeds for a difference of 0.002"
    )  # mean of -0.10, +0.18, -0.08, +0.06, -0.05
    assert "pp" not in first.plan


def test_claim_8_reads_the_accuracy_flipped_labels_cost_seed_by_seed() -> None:
    rows = []
    for seed in range(3):
        for loss, cost in (("mae", 0.02), ("ce", 0.10), ("mse", 0.01)):
            rows.append(run_row("claim_label_noise", loss, "mlp", seed, test_last__acc=0.8 + 0.01 * seed))
            rows.append(run_row("claim_label_noise", loss, "mlp", seed, test_last__acc=0.8 - cost, label_noise=0.4))
    with_drops = rules.with_drops(rows)
    assert [round(r.get(rules.DROP, -1), 6) for r in with_drops[:4]] == [-1, 0.02, -1, 0.1]
    finding = evaluate.claim_8(rows)
    assert [(t.prediction.candidate, t.prediction.reference) for t in finding.tested] == [("mae", "ce")]
    assert finding.tested[0].decision.paired.differences == pytest.approx((0.02 - 0.10,) * 3)
    assert finding.tested[0].outcome == rules.HOLDS and finding.verdict.kind == rules.SUPPORTED


def test_claim_6_counts_agreement_with_a_wilson_interval() -> None:
    rows = []
    for seed in range(12):
        overfit = float(seed % 2)
        rows.append(
            run_row("claim_overfitting", "ce", "mlp", seed, summary__has_onset=overfit, summary__loss_has_onset=overfit)
        )
        rows.append(
            run_row("claim_overfitting", "mae", "mlp", seed, summary__has_onset=overfit, summary__loss_has_onset=0.0)
        )
        rows.append(
            run_row("claim_overfitting", "gce", "mlp", seed, summary__has_onset=0.0, summary__loss_has_onset=0.0)
        )
    finding = evaluate.claim_6(rows)
    share = {m.group["loss"]: m.interval for m in finding.measured if m.measure == rules.AGREEMENT}
    assert share["ce"].mean == 1.0 and share["ce"].low == pytest.approx(0.7575, abs=1e-3)  # Wilson, 12 of 12
    assert share["mae"].mean == 0.5  # agrees on the 6 runs that do not overfit only
    missed = {m.group["loss"]: m.interval.mean for m in finding.measured if m.measure == rules.MISSED}
    assert missed["ce"] == 0.0 and missed["mae"] == 1.0 and math.isnan(missed["gce"])  # gce: nothing to miss
    # gce agrees in 12 of 12 runs, but only that nothing overfits: no evidence that its val/loss detects overfitting
    assert share["gce"].mean == 1.0 and "nothing to detect" in finding.verdict.decide
    assert finding.verdict.kind == rules.DEPENDS
    assert finding.verdict.text == "depends on the loss: holds for ce; undecided for gce, mae"
    alone = evaluate.claim_6([r for r in rows if r["loss"] == "ce"])
    assert alone.verdict.kind == rules.SUPPORTED and alone.verdict.text == "its prediction holds"


def test_verdict_rule_on_outcomes() -> None:
    def cases(*outcomes):
        return [
            Case({"model": m, "measure": "NLL"}, o, "3 more seeds") for m, o in zip(("linear", "mlp", "cnn"), outcomes)
        ]

    assert rules.verdict(cases(rules.HOLDS, rules.HOLDS), "r").kind == rules.SUPPORTED
    assert rules.verdict(cases(rules.REVERSED, rules.REVERSED), "r").kind == rules.CONTRADICTED
    undecided = rules.verdict(cases(rules.UNDECIDED, rules.UNDECIDED), "r")
    assert undecided.kind == rules.INCONCLUSIVE and undecided.decide == "3 more seeds"
    split = rules.verdict(cases(rules.HOLDS, rules.REVERSED, rules.HOLDS), "r")
    assert split.text == "depends on model: holds for linear, cnn; reversed for mlp"
    assert rules.verdict([], "r").kind == rules.INCONCLUSIVE


def test_separating_finds_the_fewest_dimensions() -> None:
    blocks = [
        ({"model": m, "noise": n}, rules.HOLDS if n == "0.4" else rules.UNDECIDED)
        for m in ("a", "b")
        for n in ("0.0", "0.4")
    ]
    assert rules.separating([Case(b, o) for b, o in blocks]) == ["noise"]
    both = [
        Case({"model": "a", "noise": "0"}, rules.HOLDS),
        Case({"model": "b", "noise": "1"}, rules.REVERSED),
        Case({"model": "a", "noise": "1"}, rules.UNDECIDED),
    ]
    assert rules.separating(both) == ["model", "noise"]


def test_the_pages_have_every_claim_its_verdict_rule_and_figure(tmp_path: Path) -> None:
    rows = epochs_table({"linear": [7.0, 8.0, 9.0]}, {"linear": [2.0, 3.0, 2.0]})
    rows += [  # 12 of 12 agree: a Wilson interval whose end lies a hair below the share itself
        run_row("claim_overfitting", "ce", "mlp", s, summary__has_onset=1.0, summary__loss_has_onset=1.0)
        for s in range(12)
    ]
    findings = evaluate.evaluate(rows)
    context = write.Context("python -m lossbench.claims", False, 60.0, [], [], [], "abc1234")
    files = write.write(tmp_path, findings, context)
    text = (tmp_path / "claims.md").read_text()
    assert [f.claim.number for f in findings] == list(range(1, 9))
    assert text.count("## Claim ") == 8 and text.count("**Verdict: ") == 8 and text.count("*Rule:* ") == 8
    assert "| 2. MAE may converge more slowly" in text and "supported" in text
    summary = json.loads((tmp_path / "claims.json").read_text())
    assert [c["verdict"]["kind"] for c in summary["claims"]][1] == rules.SUPPORTED
    assert all(c["verdict"]["kind"] in rules.VERDICTS and c["verdict"]["rule"] for c in summary["claims"])
    assert (tmp_path / "claim2.png").is_file() and tmp_path / "claim2.png" in files
    assert (tmp_path / "claim6.png").is_file() and "not drawn" not in text
    assert "data:image/png;base64," in (tmp_path / "claims.html").read_text()


# ------------------------------------------------------------------------------------------ the command, end to end


def claims(tmp_path: Path, root: Path, *extra: str) -> subprocess.CompletedProcess:
    store = tmp_path / "mlflow.db"
    overrides = [o for o in tiny_overrides(root, store) if not o.startswith("trainer.max_epochs")]
    args = [
        sys.executable,
        "-m",
        "lossbench.claims",
        "--quick",
        "--out",
        str(tmp_path / "claims"),
        *overrides,
        "trainer.max_epochs=2",
        *extra,
    ]
    return subprocess.run(args, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_quick_claims_on_tiny_data_write_every_section_verdict_and_figure_and_a_rerun_reuses_every_job(
    tmp_path: Path,
) -> None:
    root = write_mnist_family(tmp_path / "data", "FashionMNIST", n_train=1200, n_test=400)
    first = claims(tmp_path, root)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    out = tmp_path / "claims"
    summary = json.loads((out / "claims.json").read_text())
    assert [c["number"] for c in summary["claims"]] == list(range(1, 9))
    for claim in summary["claims"]:
        assert claim["verdict"]["kind"] in rules.VERDICTS and claim["verdict"]["rule"] and claim["statement"]
        assert (out / claim["figure"]).is_file(), claim["figure"]
        assert claim["measured"], f"claim {claim['number']} measured nothing"
    ran = {s["protocol"]: s["outcomes"]["finished"] for s in summary["sweeps"]}
    assert ran == QUICK_JOBS
    text = (out / "claims.md").read_text()
    assert text.count("**Protocol.**") == 8 and "Quick protocols" in text
    assert (out / "claims.html").read_text().count("data:image/png;base64,") == 8
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("claims").experiment_id])
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "claims")}
    assert {"claims/claims.md", "claims/claims.html", "claims/claims.json", "claims/claim1.png"} <= logged
    assert run.data.tags["lossbench.kind"] == "claims" and "| claim | verdict |" in run.data.tags["mlflow.note.content"]
    again = claims(tmp_path, root)
    assert again.returncode == 0, again.stderr[-3000:]
    second = json.loads((out / "claims.json").read_text())
    assert {s["protocol"]: s["outcomes"]["skipped"] for s in second["sweeps"]} == QUICK_JOBS
    assert [c["verdict"] for c in second["claims"]] == [c["verdict"] for c in summary["claims"]]
    assert len(client.search_runs([client.get_experiment_by_name("claims").experiment_id])) == 1, (
        "the same run, updated"
    )


def test_an_option_hydra_cannot_compose_is_one_line_naming_the_choices_before_any_run(tmp_path, capsys) -> None:
    """The same line python -m lossbench.train gives (lossbench.errors.composition_message), exit 2, nothing run."""
    from lossbench.claims import cli

    status = cli.main(["--quick", "--out", str(tmp_path / "claims"), "data=nosuch", f"data.root={tmp_path}"])
    err = capsys.readouterr().err.strip()
    assert status == 2 and len(err.splitlines()) == 1
    assert err.startswith("lossbench.claims: error: data=nosuch: no such option in conf/data/; choose one of ")
    assert "fashion_mnist" in err and not (tmp_path / "claims" / "claims.md").exists()
