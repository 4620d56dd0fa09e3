"""virtctl."""
