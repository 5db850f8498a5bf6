"""Classical per-clip scorers: pure functions on ``ClipFrames``, one module per stage.

Each module has ``STAGE``, ``VERSION``, one ``*Config`` model and ``score(clip, cfg) -> dict`` returning exactly
the columns of ``curation.lake.schemas.STAGE_FIELDS[STAGE]``; ``curation.scorers.registry`` lists them.
"""
