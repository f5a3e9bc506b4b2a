"""What the user reads and types: arguments, commands to paste, labels, progress, results."""
