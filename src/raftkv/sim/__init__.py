"""The deterministic cluster simulator: many cores, one seed, every safety property checked."""
