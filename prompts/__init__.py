"""Prompt templates, media layouts and the system prompt, as data files read with `importlib.resources`."""
