"""Recurrent Generation (docs/method.md §4, supplemental Algorithm 1): regenerate until RFNet says Available.

`loop` holds the algorithm for many products at once with injected generate/judge callables,
`policies` the optional defect-aware retries, `run` the `reliable-ad run` job, `report` its HTML report.
"""
