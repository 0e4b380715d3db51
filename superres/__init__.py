"""superres: super-resolution training-data curation (`superres.curation`) and the SR models that show
curation pays off (`superres.sr`); `superres.cli` is the `superres` command and `superres.train` the SR
trainer's command line."""
__version__ = "0.1.0"
