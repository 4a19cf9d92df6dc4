"""Command-line tools (train, eval, infer); the same program in both twins."""
