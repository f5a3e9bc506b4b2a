"""Reading Codex's own files: the home, its config, state DBs, rollouts (plain or zstd), locks, hosts."""
