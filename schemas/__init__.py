"""Record types shared by every stage boundary, statuses, score names, output layout names, key formats,
the sample JSON schema and the taxonomy records.

What lives here may import nothing of counterfactory's: ``stages`` and ``pipeline`` build on it.
"""

SCHEMA_VERSION = 3  # 2: member samples of one shape in shards/, set samples in sets/; 3: identity_member, score_notes, judge and drift scores, judge_answers
