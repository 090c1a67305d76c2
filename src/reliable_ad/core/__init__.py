"""What every part of reliable-ad shares: typed configs, atomic file writes, lazy exports, the class
labels, and the registry of presets and packaged weights."""
