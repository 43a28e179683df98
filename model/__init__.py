"""SegChat: reasoning segmentation with a vision-language model and SAM2, natively on transformers.

The public names are imported lazily so that light submodules (metrics, data readers) load without torch models.
"""

_PUBLIC = {
    "SegChat": "model.segchat", "Conversation": "model.segchat", "Reply": "model.segchat",
    "Segment": "model.segchat", "Limits": "model.segchat",
    "InputError": "model.errors", "MediaError": "model.errors",
}
__all__ = list(_PUBLIC)


def __getattr__(name: str):
    if name in _PUBLIC:
        import importlib

        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'model' has no attribute {name!r}")
