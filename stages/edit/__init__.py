"""The edit stage: render every member (and candidate) of a set with a diffusion model.

``base.Editor`` is the stage and the contract every backend fills in; one module per backend
(instruct_pix2pix, img2img, inpaint, flux_kontext, text_to_image) declares everything about itself;
``registry`` maps ``edit.backend`` names to them; ``config`` is the ``edit`` section; ``p2p`` and
``p2p_sampler`` are text_to_image's attention control and sampling loop.

All members of a set go through the model together, in chunks of at most ``max_batch`` images. Each image
gets its own noise from its candidate's seed, so members of a candidate share their initial noise and the
pixels depend only on (run seed, set id, candidate), never on batching.

May import: schemas, stages.base, stages.models, stages.utils.
"""
