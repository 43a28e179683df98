"""Agent mode: a plain vision-language model plans and chooses, SAM 3 segments (`loop.py`); the tool-call format
(`protocol.py`); plain VLM checkpoints (`plain.py`)."""
