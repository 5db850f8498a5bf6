"""Algorithms over CLIP embeddings (report sections 3.1 "Visual quality" and 3.2): k-means clustering with
per-cluster quotas, the quality expert's rating sample, semantic near-duplicates, zero-shot categories and the
post-training selection. Pure functions over numpy arrays; the stages in ``curation.stages`` wire them to the lake.
"""
