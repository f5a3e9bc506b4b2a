"""Planners of each kind of change: repair, migration, history reset, import, export, recovery, advice."""
