"""curation/media package."""
