"""Runs on disk: operations, the executor, the journal, undo, restore, runs, artifacts."""
