"""The stages: plain callables on pyarrow batches, each built from its config section, ``start()``-ed once
per worker and called per batch (the contract is ``base.Stage``). In run order: ingest, caption, concept,
sets, edit, filter, encode. What stages share sits in ``models/`` (model wrappers) and ``utils/``.

May import: schemas. Never ray, never pipeline: the same class runs in a Ray actor, in the local
executor, and in a test.
"""
