"""emoprune: Gedeon's distinctiveness pruning on facial expression recognition (SFEW)."""

__version__ = "0.1.0"
