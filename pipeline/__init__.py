"""Assembly of the TSC orchestrator pipeline: options, graph, operation handlers, logging."""
