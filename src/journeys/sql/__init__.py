"""The shipped SQL models, one file per table in staging/, intermediate/ and marts/ (read by journeys.models)."""
