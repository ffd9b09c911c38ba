"""``counterfactory export OUT --to FORMAT DEST``: an output's accepted members in the input formats of the
trainers people use: LLaVA-1.5 (``llava``), LLaMA-Factory (``sharegpt``) and a Hugging Face dataset
folder (``hf``). Each format's module writes what its loader reads; ``members`` selects and joins weights.

May import: schemas, pipeline.trainers (readers, member tables), pipeline.output. Never the run path's executors.
"""
