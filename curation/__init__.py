"""Data curation: media I/O, Lance tables, filters and scorers, selection (Wan 2.1 report, section 3)."""
