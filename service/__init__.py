"""labelloop: streaming natural-label collection."""
