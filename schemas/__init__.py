"""Record types shared by every stage boundary, statuses, score names, output layout names, key formats,
the sample JSON schema and the taxonomy records.

What lives here may import nothing of counterfactory's: ``stages`` and ``pipeline`` build on it.
"""

# 2: member samples of one shape in shards/, set samples in sets/; 3: identity_member, score_notes, judge and drift
# scores, judge_answers; 4: the manifest's source_offset, source_size, source_version and content_id (a resume
# checks the input and keeps dedupe)
SCHEMA_VERSION = 4
