"""SegChat: reasoning segmentation with a vision-language model and SAM2, natively on transformers.

The public names are imported lazily so that light submodules (metrics, data readers) load without torch models.
"""

_PUBLIC = {
    "SegChat": "model.inference", "Conversation": "model.inference", "Reply": "model.inference",
    "Segment": "model.segmenters", "Limits": "model.processing", "SegChatProcessor": "model.processing",
    "SegChatModel": "model.modeling", "SegChatError": "model.errors", "InputError": "model.errors",
    "MediaError": "model.errors", "CheckpointError": "model.errors", "DatasetError": "model.errors",
}
__all__ = list(_PUBLIC)


def __getattr__(name: str):
    if name in _PUBLIC:
        import importlib

        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'model' has no attribute {name!r}")
