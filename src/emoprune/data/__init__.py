"""Data: validating the SFEW folder layout (ingest), decoding and resizing frames, the sample."""
