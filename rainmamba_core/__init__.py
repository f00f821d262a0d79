"""rainmamba_core."""
