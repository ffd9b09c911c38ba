"""``counterfactory report OUT``: the data card (card: README.md, croissant.json), the preview page (preview),
the plots (plots), read from an output's contents (contents) and written by build.

May import: schemas, pipeline.output.
"""
