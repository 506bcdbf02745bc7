"""Speech LLMs: loading, model families, batches, generation, the tiny offline preset, encoder speed-ups."""
