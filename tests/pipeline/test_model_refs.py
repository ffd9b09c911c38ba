import shutil

import pytest

from pipeline.config.errors import ConfigError
from pipeline.config.model_refs import check_reference
from stages.caption import CaptionConfig, Captioner
from stages.utils.errors import StageSetupError
from tests.helpers import noise_image


@pytest.fixture
def pickled_captioner(tiny, tmp_path):
    """The tiny captioner re-saved as a pickle checkpoint (pytorch_model.bin), as old Hub repos ship."""
    import torch
    from transformers import BlipForConditionalGeneration

    folder = tmp_path / "pickled"
    shutil.copytree(tiny["captioner"], folder)
    (folder / "model.safetensors").unlink()
    torch.save(BlipForConditionalGeneration.from_pretrained(tiny["captioner"]).state_dict(), folder / "pytorch_model.bin")
    assert (folder / "pytorch_model.bin").exists() and not list(folder.glob("*.safetensors"))
    return folder


def test_a_pickle_checkpoint_is_refused_naming_the_file_and_the_switch(pickled_captioner):
    with pytest.raises(ConfigError) as err:
        check_reference("caption.model", str(pickled_captioner), None, "run.yaml")
    message = str(err.value)
    assert "pytorch_model.bin is a pickle checkpoint" in message and "caption.allow_pickle: true" in message
    # the loader itself refuses too: it asks transformers for safetensors only, which finds none
    with pytest.raises(StageSetupError, match=r"^stage caption could not set up \(load its model\): OSError: .*"
                                              r"no file named model\.safetensors found in directory"):
        Captioner(CaptionConfig(model=str(pickled_captioner), dtype="float32")).start()


def test_with_the_switch_the_pickle_checkpoint_loads(pickled_captioner):
    check_reference("caption.model", str(pickled_captioner), None, "run.yaml", allow_pickle=True)
    captioner = Captioner(CaptionConfig(model=str(pickled_captioner), dtype="float32", num_beams=1, allow_pickle=True))
    captioner.start()
    assert captioner.caption_images([noise_image(0)])[0]


def test_safetensors_models_pass(tiny):
    for field, name in (("caption.model", "captioner"), ("edit.model", "instruct-pix2pix"), ("filter.model", "clip")):
        check_reference(field, tiny[name], None, "run.yaml")
