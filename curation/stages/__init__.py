"""curation/stages package."""
