"""What every part of reliable-ad shares: typed configs (`config`), atomic file writes (`io`), lazy
exports (`lazy`), the class labels (`labels`), and the one registry of presets and packaged weights
with its resolver of "name, folder, hub id or file?" (`registry`; `reliable-ad models` lists it)."""
