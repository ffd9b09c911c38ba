"""Human review of an output: each reviewer's verdicts (verdicts), agreement between reviewers (agreement),
the sets as the review page shows them (catalog), the local web app (server, page.html), and applying the
verdicts to the shards, manifests and report (apply, with rebuild for the tars).

May import: schemas, pipeline.output, pipeline.report, and stages.utils.faults (the tests' kill points).
"""
