"""Errors whose message is meant for the person chatting, not for a log reader."""


class MediaError(ValueError):
    """An image or video that cannot be used; the message is safe to show in the chat."""


class InputError(ValueError):
    """Bad user input other than media (text too long, injected control tokens, ...)."""
