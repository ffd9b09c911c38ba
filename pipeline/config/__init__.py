"""The run config: its sections (sections), loading and the checks across fields (loading), the typed
YAML builder (typed), one-line errors (errors), the taxonomy file (taxonomy), the config hash (hashing),
and the models a run uses with their reference checks (model_refs).

May import: schemas, stages (their config sections and backend declarations). Never ray.
"""

