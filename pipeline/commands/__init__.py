"""The command line (cli) and what only commands do: the dry run of ``plan`` (plan) and its cost model (cost).

May import: everything in pipeline, schemas and stages.
"""
