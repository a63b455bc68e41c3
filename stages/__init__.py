"""The DVC stages, one short module each, run as `python -m stages.<name>` (see ldvc/pipeline.py)."""
