"""Pipeline stages of the TSC orchestrator: one module per stage, IO kept at the edges."""
