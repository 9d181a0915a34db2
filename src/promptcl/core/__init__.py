"""The protocol core: what both protocols stand on (run directory, checkpoint, the loop)."""
