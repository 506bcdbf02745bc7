"""Data: the offline spoken corpus (grammar, espeak-ng TTS), audio decoding, sources, prepared splits."""
