"""The edit backends by name (``edit.backend``). A new backend: its own module with an ``Editor``
subclass, and one line in ``_BUILT_IN`` (or ``register(MyEditor)`` from anywhere, for a plugin)."""

from __future__ import annotations

from stages.edit.base import Editor
from stages.edit.flux2_klein import Flux2KleinEditor
from stages.edit.flux_kontext import FluxKontextEditor
from stages.edit.img2img import Img2ImgEditor
from stages.edit.inpaint import InpaintEditor
from stages.edit.instruct_pix2pix import InstructPix2PixEditor
from stages.edit.qwen_image_edit import QwenImageEditEditor
from stages.edit.text_to_image import TextToImageEditor

BACKENDS: dict[str, type[Editor]] = {}


def register(editor: type[Editor]) -> type[Editor]:
    if not editor.backend:
        raise ValueError(f"{editor.__name__} declares no backend name")
    BACKENDS[editor.backend] = editor
    return editor


def backend(name: str) -> type[Editor]:
    """The Editor class of backend ``name``; a ValueError naming the known ones otherwise."""
    if name not in BACKENDS:
        raise ValueError(f"unknown edit backend {name!r}; allowed: {', '.join(BACKENDS)}")
    return BACKENDS[name]


_BUILT_IN = (
    InstructPix2PixEditor,
    Img2ImgEditor,
    InpaintEditor,
    FluxKontextEditor,
    Flux2KleinEditor,
    QwenImageEditEditor,
    TextToImageEditor,
)
for _editor in _BUILT_IN:
    register(_editor)
