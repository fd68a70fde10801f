"""Records and wire: what a lab result is, and how it is spelled in JSON (both decode paths)."""
