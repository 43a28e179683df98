"""Proof of learning: a tiny SegChat trained from scratch on synthetic scenes (`recipe`), its two warm-up stages
(`language_warmup`, `vision_warmup`, sharing `warmup`), the cached offline demo built from it (`demo`) and the CLI
that runs and scores it (`__main__`)."""
