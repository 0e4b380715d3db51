"""superres: super-resolution training-data curation (DiverSeg findings) and, later, SR models.

Modules: `metrics` (per-image scores), `quality` (dataset-level JPEG quality), `scoring` (folders ->
score tables), `dedup`, `curate`, `report`, `cli` (the `superres` command).
"""
__version__ = "0.1.0"
