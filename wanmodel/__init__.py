"""wanmodel package."""
