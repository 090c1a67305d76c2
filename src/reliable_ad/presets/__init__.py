"""Built-in prompt presets (data only); loaded by `reliable_ad.generation.prompts`."""
