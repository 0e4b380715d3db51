"""superres: super-resolution training-data curation. Not implemented yet (see the open issues)."""
__version__ = "0.1.0"
