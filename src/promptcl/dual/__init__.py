"""Prompt learning for dual encoders (CLIP-like): MPL and the methods it is compared with,
the base-to-novel and cross-dataset protocols."""
