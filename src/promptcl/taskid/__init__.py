"""Task-identity inference components, shared by the tuners that need one."""

from promptcl.taskid.keymatch import cosine, match_keys, prompt_id

__all__ = ["cosine", "match_keys", "prompt_id"]
