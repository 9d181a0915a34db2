"""The two protocols, clients of the one core: continual (task streams) and base-to-novel."""
