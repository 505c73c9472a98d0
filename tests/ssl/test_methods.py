"""SimSiam, BYOL and DINO on tiny encoders: each lowers its own loss; momentum networks follow the online one."""

import pytest
import torch

from medseg.models import build_model
from medseg.ssl import Backbone, build_method, encoder_prefix, random_view
from medseg.ssl.methods import cosine_momentum

TINY = {"simsiam": dict(proj_dim=32, pred_dim=8), "byol": dict(hidden_dim=32, proj_dim=16),
        "dino": dict(out_dim=64, hidden_dim=32, bottleneck_dim=16)}


def _model(name: str = "resnet_unet") -> torch.nn.Module:
    torch.manual_seed(0)
    if name == "resnet_unet":
        return build_model(name, arch="resnet18", base_width=8, decoder_channels=(32, 16, 16, 8, 8))
    return build_model(name, img_size=32, hidden_size=48, mlp_dim=96, num_heads=2, feature_size=8)


@pytest.mark.parametrize("model", ["resnet_unet", "vit_unet"])
def test_the_backbone_pools_the_encoder(model: str) -> None:
    m = _model(model)
    b = Backbone(m)
    assert b.encoder is m.get_submodule(encoder_prefix(m))
    assert b(torch.rand(2, 3, 32, 32)).shape == (2, b.dim)


def test_a_model_without_an_encoder_prefix_is_refused() -> None:
    with pytest.raises(ValueError, match="no encoder_prefix"):
        Backbone(build_model("basic_unet", features=(8, 8, 16, 32, 64, 8)))


@pytest.mark.parametrize("method", ["simsiam", "byol", "dino"])
def test_each_method_lowers_its_own_loss(method: str) -> None:
    """Twenty steps on one fixed batch of views: the loss falls (the methods are trainable end to end)."""
    m = _model()
    ssl = build_method(method, Backbone(m), **TINY[method])
    opt = torch.optim.AdamW([p for p in ssl.parameters() if p.requires_grad], lr=3e-3)
    x = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    views = [random_view(x, o, g) for o in ssl.view_options(32)]
    losses = []
    for step in range(20):
        loss = ssl(views)
        opt.zero_grad()
        loss.backward()
        opt.step()
        ssl.momentum_update(step / 20)
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert min(losses[-5:]) < losses[0]


@pytest.mark.parametrize("method", ["byol", "dino"])
def test_the_momentum_network_follows_the_online_one(method: str) -> None:
    ssl = build_method(method, Backbone(_model()), **TINY[method])
    target = ssl.target_backbone if method == "byol" else ssl.teacher_backbone
    assert not any(p.requires_grad for p in target.parameters())
    online = next(ssl.backbone.parameters())
    with torch.no_grad():
        online.add_(1.0)
    before = next(target.parameters()).clone()
    ssl.momentum_update(0.0)  # momentum 0.996: the target moves 0.4 % of the way
    after = next(target.parameters())
    assert torch.allclose(after - before, 0.004 * (online - before), atol=1e-6)
    ssl.momentum_update(1.0)  # momentum 1: frozen
    assert torch.equal(next(target.parameters()), after)


def test_cosine_momentum_runs_from_base_to_one() -> None:
    assert cosine_momentum(0.996, 0.0) == pytest.approx(0.996)
    assert cosine_momentum(0.996, 0.5) == pytest.approx(0.998)
    assert cosine_momentum(0.996, 1.0) == pytest.approx(1.0)


def test_dino_takes_local_crops_and_centres_the_teacher() -> None:
    ssl = build_method("dino", Backbone(_model()), local_crops=2, local_size=16, **TINY["dino"])
    opts = ssl.view_options(32)
    assert [o.size for o in opts] == [32, 32, 16, 16]
    x = torch.rand(4, 3, 32, 32)
    g = torch.Generator().manual_seed(0)
    loss = ssl([random_view(x, o, g) for o in opts])
    assert torch.isfinite(loss) and ssl.center.abs().sum() > 0  # the centre moved towards the teacher's mean


def test_an_unknown_method_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"\['byol', 'dino', 'simsiam'\]"):
        build_method("mocov3", Backbone(_model()))
