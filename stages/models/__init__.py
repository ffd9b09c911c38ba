"""Model wrappers stages share: the open_clip embedder (clip), the CLIP checks of a candidate
(clip_checks), the CLIP zero-shot safety screen (safety), the CLIPSeg region segmenter (segmenter).

May import: schemas, stages.utils.
"""
