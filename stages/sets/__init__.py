"""The sets stage (``plan`` section): seeds become counterfactual set rows; phrasing writes each member's
target caption, person phrase and editor instruction.

May import: schemas, stages.base, stages.utils.
"""
