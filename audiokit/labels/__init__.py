"""Label lists shipped with audiokit (package data read with importlib.resources)."""
