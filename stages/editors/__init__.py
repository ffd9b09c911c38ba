"""Editor backends: one module per diffusers model family, all on the contract in ``base.Editor``."""

from stages.editors.img2img import Img2ImgEditor
from stages.editors.inpaint import InpaintEditor
from stages.editors.instruct_pix2pix import InstructPix2PixEditor
from stages.editors.kontext import FluxKontextEditor
from stages.editors.text_to_image import TextToImageEditor

EDITORS = {
    "instruct_pix2pix": InstructPix2PixEditor,
    "img2img": Img2ImgEditor,
    "inpaint": InpaintEditor,
    "flux_kontext": FluxKontextEditor,
    "text_to_image": TextToImageEditor,
}
