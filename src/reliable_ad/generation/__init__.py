"""Generation (docs/method.md §2): product preparation, prompt presets, the ControlNet-inpainting generator, runs.

Submodules: `product` (pure array functions), `prompts` and `weighting` (presets, A1111 weights),
`models` (loading), `generator` (the pipeline wrapper), `run` (resumable runs with a manifest).
"""
