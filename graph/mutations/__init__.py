"""One module per root mutation: its input, payload and resolver."""
