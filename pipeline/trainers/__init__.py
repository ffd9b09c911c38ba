"""The trainers' side: reading an output (readers), the ASD debiasing maths (debias), LLaVA-format
encoding and a reference ASD epoch (llava), steering vectors (steering), MaxSkew@K of a CLIP model (evaluate), users' per-member tables joined by
id (member_table).

May import: schemas, stages (models), pipeline.output, pipeline.config. Never the run path's executors.
"""
