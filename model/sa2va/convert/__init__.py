"""Converters from published checkpoint layouts to native transformers modules."""
