"""Evidence sources: each maps candidate compositions to mass functions over the phase frame."""
