"""Curation of super-resolution training data (DiverSeg findings): per-image scores (`metrics`),
dataset-level JPEG quality (`quality`), folders -> resumable score tables (`scoring`, `table`),
near-duplicates (`dedup`), filters and strata (`curate`) and plots (`report`)."""
