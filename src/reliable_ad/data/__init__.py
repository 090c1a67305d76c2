"""Data formats every part shares: the manifest record a run writes (``records``)."""
