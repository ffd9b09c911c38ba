"""The driver side, split by concern: config/ (sections, loading, typed checks, taxonomy, model references),
execution/ (stage list, Ray and local executors, the run), output/ (storage, shard writer, lock and resume,
stats, verify), report/ (data card, preview, plots), review/ (human review: verdicts, agreement, web app, apply),
commands/ (CLI, plan, cost, export, asd, review), trainers/ (readers, ASD,
LLaVA, steering, evaluate), testing/ (tiny offline models).

May import: schemas, stages.
"""
