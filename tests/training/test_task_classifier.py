"""Refitting a task model's classifier head on frozen pooled features (:mod:`medseg.training.task_classifier`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from medseg.models import build_model
from medseg.training.task_classifier import ClassifierFitConfig, fit_task_classifier, pooled_features
from tests.conftest import tiny_model_config


def _model():
    torch.manual_seed(0)
    return build_model("esp_medsam", **{**tiny_model_config("esp_medsam"), "tasks": ["a", "b", "c"]}).eval()


def _blobs(seed: int, spread: float, per_task: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    """Three separable tasks: (3·per_task, 2C) points around seeded centres ``spread`` apart, and their labels."""
    dim = _model().classifier.head[0].normalized_shape[0]
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(3, dim, generator=gen) * spread
    y = torch.arange(3).repeat(per_task)
    return centres[y] + torch.randn(len(y), dim, generator=gen), y


def test_pooled_features_are_the_classifier_input_of_the_letterboxed_image() -> None:
    from medseg.data.geometry import letterbox_image

    model = _model()
    size = 64  # tiny_model_config's input size
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 255, (30, 50, 3), dtype=np.uint8), rng.integers(0, 255, (40, 20, 3), dtype=np.uint8)]
    feats = pooled_features(model, imgs, img_size=size, flips=True, batch_size=4)
    assert feats.shape[0] == 6  # 3 views per image, consecutive
    x = torch.from_numpy(letterbox_image(np.ascontiguousarray(imgs[1][:, ::-1]), size)[0])[None]
    with torch.no_grad():
        logits = model.classifier(model.image_encoder.shared_features(x))
        assert torch.allclose(model.classifier.head(feats[4:5]), logits, atol=1e-5)
    fit_task_classifier(model, feats, torch.tensor([0, 0, 0, 1, 1, 1]), cfg=ClassifierFitConfig(steps=2))  # trainable


def test_refit_learns_separable_tasks_chooses_on_validation_and_touches_only_the_head() -> None:
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    dim = model.classifier.head[0].normalized_shape[0]
    gen = torch.Generator().manual_seed(1)
    centres = torch.randn(3, dim, generator=gen) * 3
    y = torch.arange(3).repeat(20)
    x = centres[y] + torch.randn(len(y), dim, generator=gen)
    vy = torch.arange(3).repeat(5)
    vx = centres[vy] + torch.randn(len(vy), dim, generator=gen)
    fit = fit_task_classifier(model, x, y, vx, vy, ClassifierFitConfig(steps=60, lr=1e-2))
    assert fit.val_accuracy == 1.0 and fit.train_accuracy == 1.0
    assert fit.history[fit.chosen_step - 1]["val_accuracy"] == max(r["val_accuracy"] for r in fit.history)
    with torch.no_grad():
        assert (model.classifier.head(vx).argmax(1) == vy).all()
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.startswith("classifier.head.") for k in changed)
    # without validation data: the last step, and the same result for the same seed
    again = _model()
    a = fit_task_classifier(again, x, y, cfg=ClassifierFitConfig(steps=5, seed=3))
    b_model = _model()
    fit_task_classifier(b_model, x, y, cfg=ClassifierFitConfig(steps=5, seed=3))
    assert a.chosen_step == 5 and a.val_accuracy is None
    assert torch.equal(again.classifier.head[1].weight, b_model.classifier.head[1].weight)


def test_refit_rejects_labels_outside_the_tasks() -> None:
    model = _model()
    dim = model.classifier.head[0].normalized_shape[0]
    with pytest.raises(ValueError, match="task indices"):
        fit_task_classifier(model, torch.zeros(2, dim), torch.tensor([0, 7]))
    with pytest.raises(ValueError, match="pair up"):
        fit_task_classifier(model, torch.zeros(2, dim), torch.tensor([0]))


def test_a_balanced_fit_weighs_a_rare_task_like_a_common_one() -> None:
    """Features that say nothing about the task: an unweighted fit learns the 90/10 prior, the balanced one
    (task loss weight n / (k · n_task)) gives the rare task clearly better odds on new features."""
    dim = _model().classifier.head[0].normalized_shape[0]
    gen = torch.Generator().manual_seed(2)
    y = torch.tensor([0] * 90 + [1] * 10)
    x, fresh = torch.randn(len(y), dim, generator=gen), torch.randn(200, dim, generator=gen)
    p_rare = {}
    for balanced in (False, True):
        model = _model()
        fit_task_classifier(model, x, y, cfg=ClassifierFitConfig(steps=40, lr=1e-2, balanced=balanced))
        with torch.no_grad():
            p_rare[balanced] = float(model.classifier.head(fresh).softmax(1)[:, 1].mean())
    assert p_rare[False] < 0.2 and p_rare[True] > 1.5 * p_rare[False]


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), steps=st.integers(1, 6))
def test_keep_before_never_lowers_validation_accuracy(seed: int, steps: int) -> None:
    """Law: with ``keep_before`` the weights the fit started from are kept when no step reaches their validation
    accuracy, so the chosen head's is never below theirs; then the head is left exactly as it was (step 0)."""
    gen = torch.Generator().manual_seed(seed)
    model = _model()
    dim = model.classifier.head[0].normalized_shape[0]
    x, y = torch.randn(30, dim, generator=gen), torch.randint(0, 3, (30,), generator=gen)
    vx, vy = torch.randn(12, dim, generator=gen), torch.randint(0, 3, (12,), generator=gen)
    start = {k: v.clone() for k, v in model.classifier.head.state_dict().items()}
    fit = fit_task_classifier(model, x, y, vx, vy, ClassifierFitConfig(steps=steps, lr=1e-2, keep_before=True,
                                                                         seed=seed))
    with torch.no_grad():
        now = float((model.classifier.head(vx).argmax(1) == vy).float().mean())
    assert fit.val_accuracy_before is not None and now >= fit.val_accuracy_before
    assert fit.val_accuracy == now
    if fit.chosen_step == 0:
        assert all(torch.equal(v, start[k]) for k, v in model.classifier.head.state_dict().items())


def test_keep_before_gives_a_tie_in_accuracy_to_the_smoothed_refit() -> None:
    """A jointly trained classifier that is already right on every validation point, and nearly certain, has a
    lower validation loss than any label-smoothed refit can reach; at equal accuracy the refit is kept anyway (its
    loss is not compared with theirs), and it is chosen among its own steps on accuracy, then loss."""
    px, py = _blobs(1, 4.0, per_task=25)
    x, y, vx, vy = px[:60], py[:60], px[60:], py[60:]
    model = _model()
    fit_task_classifier(model, x, y, cfg=ClassifierFitConfig(steps=300, lr=1e-2))  # the "jointly trained" one
    with torch.no_grad():
        sure = model.classifier.head(vx).softmax(1).amax(1)
    assert float((model.classifier.head(vx).argmax(1) == vy).float().mean()) == 1.0 and float(sure.min()) > 0.95
    fit = fit_task_classifier(model, x, y, vx, vy, ClassifierFitConfig(steps=100, lr=1e-2, keep_before=True,
                                                                       label_smoothing=0.3))
    assert fit.chosen_step > 0 and fit.val_accuracy == fit.val_accuracy_before == 1.0
    best = max(fit.history, key=lambda r: (r["val_accuracy"], -r["val_loss"]))
    assert best["step"] == fit.chosen_step
    with torch.no_grad():  # the smoothed refit is less sure than the head it replaced
        assert float(model.classifier.head(vx).softmax(1).amax(1).max()) < float(sure.min())


def test_label_smoothing_keeps_the_refit_from_certainty() -> None:
    """On separable tasks an unsmoothed fit drives the training probabilities to 1; with label smoothing ε over K
    tasks the loss is lowest at 1 − ε + ε/K, so the fit stops near it, and still classifies every point right."""
    x, y = _blobs(4, 4.0)
    top = {}
    for eps in (0.0, 0.3):
        model = _model()
        fit = fit_task_classifier(model, x, y, cfg=ClassifierFitConfig(steps=300, lr=1e-2, label_smoothing=eps))
        assert fit.train_accuracy == 1.0
        with torch.no_grad():
            top[eps] = float(model.classifier.head(x).softmax(1).max(1).values.mean())
    assert top[0.0] > 0.99
    assert abs(top[0.3] - (1 - 0.3 + 0.3 / 3)) < 0.05
    with pytest.raises(ValueError):
        ClassifierFitConfig(label_smoothing=1.0)


def test_feature_dropout_and_mixup_are_seeded_train_only_and_still_learn_separable_tasks() -> None:
    """Dropout on the features and mixup of the rows change only the training loss: the fit is reproducible from
    its seed, differs from the plain fit, still classifies separable tasks right, and the head predicts
    deterministically."""
    x, y = _blobs(5, 4.0)
    heads = {}
    for name, extra in {"plain": {}, "dropout": {"feature_dropout": 0.5}, "mixup": {"mixup": 0.4},
                        "mixup again": {"mixup": 0.4}}.items():
        model = _model()
        fit = fit_task_classifier(model, x, y, cfg=ClassifierFitConfig(steps=60, lr=1e-2, **extra))
        assert fit.train_accuracy == 1.0
        with torch.no_grad():
            heads[name] = model.classifier.head(x)
            assert torch.equal(heads[name], model.classifier.head(x))  # eval: no dropout at prediction
    assert torch.equal(heads["mixup"], heads["mixup again"])
    assert not torch.allclose(heads["plain"], heads["dropout"]) and not torch.allclose(heads["plain"], heads["mixup"])
    with pytest.raises(ValueError):
        ClassifierFitConfig(feature_dropout=1.0)
    with pytest.raises(ValueError):
        ClassifierFitConfig(mixup=-0.1)


def test_the_plain_training_loss_is_torchs_weighted_smoothed_cross_entropy() -> None:
    """Without dropout or mixup, the per-row loss normalised by the rows' class weights equals
    ``F.cross_entropy``'s own weighted mean (the refits before these options are reproduced)."""
    import torch.nn.functional as F

    from medseg.training.task_classifier import _training_loss

    head = torch.nn.Linear(4, 3)
    gen = torch.Generator().manual_seed(0)
    x, y, w = torch.randn(10, 4, generator=gen), torch.randint(0, 3, (10,), generator=gen), torch.tensor([1., 2., 3.])
    cfg = ClassifierFitConfig(label_smoothing=0.1)
    got = _training_loss(head, x, y, w, cfg, gen, np.random.default_rng(0))
    assert torch.allclose(got, F.cross_entropy(head(x), y, weight=w, label_smoothing=0.1))


def test_an_ensemble_refit_is_the_mean_of_its_members_fitted_with_spaced_seeds() -> None:
    """``ensemble=K`` fits K heads with seeds s, s + 10, … (each chosen on validation) and keeps their mean logits in
    one head K times as wide; the members are exactly the single fits of those seeds."""
    from medseg.models.task_classifier import mean_of_heads

    dim = _model().classifier.head[0].normalized_shape[0]
    gen = torch.Generator().manual_seed(6)
    centres = torch.randn(3, dim, generator=gen) * 2
    y, vy = torch.arange(3).repeat(10), torch.arange(3).repeat(4)
    x, vx = centres[y] + torch.randn(len(y), dim, generator=gen), centres[vy] + torch.randn(len(vy), dim, generator=gen)
    cfg = ClassifierFitConfig(steps=20, lr=1e-2, seed=3, label_smoothing=0.1)
    singles = []
    for s in (3, 13, 23):
        model = _model()
        fit_task_classifier(model, x, y, vx, vy, cfg.model_copy(update={"seed": s}))
        singles.append(model.classifier.head)
    model = _model()
    fit = fit_task_classifier(model, x, y, vx, vy, cfg.model_copy(update={"ensemble": 3}))
    assert model.classifier.head[1].out_features == 3 * singles[0][1].out_features
    assert len(fit.members) == 3 and {r["member"] for r in fit.history} == {0, 1, 2}
    assert set(fit.summary()["members"][0]) >= {"chosen_step", "val_accuracy"}
    with torch.no_grad():
        assert torch.allclose(model.classifier.head(vx), mean_of_heads(singles)(vx), atol=1e-5)
        assert fit.val_accuracy == float((model.classifier.head(vx).argmax(1) == vy).float().mean())
