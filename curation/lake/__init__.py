"""Lance tables of the lake: schemas and exactly-once writers."""
from curation.lake.schemas import schema_for, stage_schema
from curation.lake.tables import KeyedWriter, Lake, conform

__all__ = ["KeyedWriter", "Lake", "conform", "schema_for", "stage_schema"]
