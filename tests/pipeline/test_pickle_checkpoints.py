"""A pickle checkpoint that carries a payload is refused wherever a model loads, and its payload never runs: the
captioner, the VLM judge, the segmenter (transformers), the editor (diffusers), CLIP (open_clip, the filter's,
the concept stage's and evaluate's), both by the run's reference check and by each loader itself. The floors in
pyproject.toml allow only releases that load weights that way (issue 33, item 18)."""

from __future__ import annotations

import pickle
import shutil

import pytest
import torch
from packaging.requirements import Requirement
from packaging.version import Version

from pipeline.config.errors import ConfigError
from pipeline.config.model_refs import check_reference
from tests.conftest import REPO


class Payload:
    """Unpickling this runs code: it writes ``path``."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return exec, (f"open({self.path!r}, 'w').write('ran')",)


def planted(tiny: dict, tmp_path, name: str, weights: str, pickle_name: str, marker) -> str:
    """A copy of the tiny model ``name`` whose ``weights`` file is replaced by a pickle carrying a payload."""
    folder = tmp_path / name
    shutil.copytree(tiny[name], folder)
    (folder / weights).unlink()
    torch.save({"state_dict": Payload(str(marker))}, folder / pickle_name)
    return str(folder)


def load_captioner(path):
    from stages.caption import CaptionConfig, Captioner

    Captioner(CaptionConfig(model=path, dtype="float32")).start()


def load_judge(path):
    from stages.models.vlm_judge import VlmJudge

    VlmJudge(path, None, "cpu", "float32").setup()


def load_segmenter(path):
    from stages.models.segmenter import MaskConfig, RegionSegmenter

    RegionSegmenter(MaskConfig(model=path), "cpu").setup()


def load_editor(path):
    from stages.edit.config import EditConfig
    from stages.edit.instruct_pix2pix import InstructPix2PixEditor

    InstructPix2PixEditor(EditConfig(backend="instruct_pix2pix", model=path, dtype="float32")).setup()


def load_clip(path):
    from stages.models.clip import ClipEmbedder

    ClipEmbedder(path, None, "cpu", "fp32")


LOADERS = [  # field, tiny model, the weights replaced, the pickle written instead, the loader
    ("caption.model", "captioner", "model.safetensors", "pytorch_model.bin", load_captioner),
    ("filter.judge.model", "qwen2.5-vl", "model.safetensors", "pytorch_model.bin", load_judge),
    ("edit.mask.model", "clipseg", "model.safetensors", "pytorch_model.bin", load_segmenter),
    ("edit.model", "instruct-pix2pix", "unet/diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model.bin",
     load_editor),
    ("filter.model", "clip", "open_clip_model.safetensors", "open_clip_pytorch_model.bin", load_clip),
]


def test_the_payload_is_live_when_unpickled_without_care(tmp_path):
    marker = tmp_path / "ran"
    torch.save({"state_dict": Payload(str(marker))}, tmp_path / "x.bin")
    torch.load(tmp_path / "x.bin", weights_only=False)  # what an unsafe loader does
    assert marker.read_text() == "ran"


@pytest.mark.parametrize("field, name, weights, pickle_name, load", LOADERS, ids=[row[1] for row in LOADERS])
def test_a_pickle_checkpoint_is_refused_and_its_payload_never_runs(tiny, tmp_path, field, name, weights, pickle_name,
                                                                   load):
    marker = tmp_path / "ran"
    path = planted(tiny, tmp_path / "models", name, weights, pickle_name, marker)
    marker_file = {"marker": "model_index.json"} if field == "edit.model" else {}
    with pytest.raises(ConfigError, match=f"{pickle_name.rsplit('/', 1)[-1]} is a pickle checkpoint"):
        check_reference(field, path, None, "run.yaml", **marker_file)
    with pytest.raises((OSError, ValueError, RuntimeError, pickle.UnpicklingError)):
        load(path)  # the loader itself, were the check skipped
    assert not marker.exists()


def test_the_dependency_floors_exclude_releases_that_unpickle_weights():
    """torch.load unpickles anything by default before torch 2.6; open_clip's local-dir models (used for every
    CLIP here) and its weights_only loading are in the tested 3.x line; Ray is pinned to the minor the tests run
    (constraints.txt), whose webdataset decoder refuses .pkl members unless told otherwise."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    requirements = {Requirement(line).name.lower(): Requirement(line) for line in project}
    pins = dict(line.split("==") for line in (REPO / "constraints.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))

    def floor(name: str) -> Version:
        return min(Version(s.version) for s in requirements[name].specifier if s.operator == ">=")

    assert floor("torch") >= Version("2.6") and floor("open_clip_torch") >= Version("3.3")
    ray = requirements["ray"].specifier
    tested = Version(pins["ray"])
    assert tested in ray and Version(f"{tested.major}.{tested.minor + 1}") not in ray
    assert Version(f"{tested.major}.{tested.minor}.0") in ray and Version(f"{tested.major}.{tested.minor - 1}") not in ray
    for name in ("torch", "open_clip_torch", "transformers", "diffusers", "ray"):
        assert Version(pins[name]) in requirements[name].specifier, name  # the tested pins stay allowed
