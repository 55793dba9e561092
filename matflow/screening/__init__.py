"""High-entropy alloy screening: candidates, evidence sources, Dempster–Shafer fusion and ranking."""
