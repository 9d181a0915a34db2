"""Prompt learning on frozen dual-encoder (CLIP-style) models."""
