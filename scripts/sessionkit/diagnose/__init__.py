"""What a home holds and what is wrong with it: the snapshot and every check."""
