"""Per-user chat state: the model conversation, the media being discussed, the turns shown and their results.

One `Session` lives in one `gr.State`; nothing here is shared between users except the read-only model. A session
owns its files: its folder (created on first use: overlays, canvases, downloads, its own link to each upload) and
the uploads it was sent, all removed when it ends (never the app's example files, which every session may send).
`Sessions` keeps the live ones so that a server shutting down ends them all.
"""

from __future__ import annotations

import copy
import ctypes
import gc
import os
import shutil
import tempfile
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from chat.examples import is_example_file
from model.inference import Conversation, SegChat
from model.regions import Region
from model.video.clip import VideoMedia


@dataclass
class Media:
    """What the conversation is about, as the model holds it: an image, or the model's video state (its clip,
    probed once, and the frames the language model saw)."""

    name: str
    image: np.ndarray | None = None  # H×W×3 uint8
    video: VideoMedia | None = None

    @property
    def kind(self) -> str:
        return "video" if self.video is not None else "image"

    @property
    def frame(self) -> np.ndarray:
        """The picture the canvas shows: the image, or the first frame the language model saw."""
        return self.image if self.video is None else np.asarray(self.video.images[0])

    @property
    def frame_index(self) -> int:
        """`frame`'s index in the video's masks (0 for an image)."""
        return 0 if self.video is None else self.video.llm_indices[0]


@dataclass
class Result:
    """The objects of one answer, rendered and exported."""

    media: Media
    labels: list[str | None]
    masks: list[np.ndarray]  # H×W for an image, T×H×W for a video
    scores: list[float]
    overlay: Path | None = None  # overlay PNG (image) or H.264 mp4 (video)
    downloads: list[Path] = field(default_factory=list)
    visible: list[bool] = field(default_factory=list)
    model_masks: list[np.ndarray] = field(default_factory=list)  # as answered, before any click refinement
    clicks: dict[int, list[tuple[float, float, int]]] = field(default_factory=dict)  # object → (x, y, 1 in/0 out)
    found: list[bool] = field(default_factory=list)  # False: the object is not there (its mask is empty)

    @property
    def found_indices(self) -> list[int]:
        return [i for i in range(len(self.masks)) if not self.found or self.found[i]]


@dataclass
class Turn:
    """One question and its answer as shown in the chat."""

    text: str
    upload: Path | None  # the file sent with this question, if any
    answer: str = ""
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    result: Result | None = None
    stopped: bool = False
    trace: list[str] = field(default_factory=list)  # agent mode: one line per tool call and decision
    regions: list[Region] = field(default_factory=list)  # what the person pointed at (sent again on retry)
    region_view: Path | None = None  # the picture with those regions as numbered marks
    # The conversation and media before this turn, so undo/retry can go back to them.
    conversation_before: Conversation | None = None
    media_before: Media | None = None
    resend_before: Path | None = None


class Session:
    """All state of one browser tab (or one API client)."""

    def __init__(self, chat: SegChat, root: Path | None = None, served: Path | None = None):
        """`root`: where the session's folder goes (default: the system temp folder); `served`: the folder where
        the web server keeps the copies of files it serves (`<served>/<hash>/<file name>`), removed with them."""
        self.served = served
        self.conversation: Conversation = chat.new_conversation()
        self.media: Media | None = None
        self.resend: Path | None = None  # the media file to send with the next question (after a model switch)
        self.turns: list[Turn] = []
        self.notice: str | None = None  # why the last message was refused (the message itself is not kept)
        # objects of earlier answers the next question points at, with what they are ("object 2, the cup")
        self.pending_regions: list[tuple[Region, str]] = []
        self.id = uuid.uuid4().hex[:16]
        self.workdir = Path(root or tempfile.gettempdir()) / f"segchat-{self.id}"  # made on first use
        self.stop_requested = threading.Event()
        self._files = 0
        self._received: set[Path] = set()  # uploads as the server received them, removed when the session ends

    @property
    def chat(self) -> SegChat:
        """The model answering now: its conversation's (so undo, which restores a conversation, restores it too)."""
        return self.conversation.chat

    def switch(self, chat: SegChat) -> None:
        """Answer with `chat` from the next question on, in a conversation of its own; the media under discussion
        goes to it with that question (the chat shown so far stays)."""
        if chat is self.chat:
            return
        self.conversation.drop_cache()  # undo may return to it; it then reads its history again
        self.conversation = chat.new_conversation()
        uploads = [turn.upload for turn in self.turns if turn.upload is not None and turn.error is None]
        self.resend = uploads[-1] if uploads and self.media is not None else None

    def snapshot(self) -> Conversation:
        """A cheap copy of the conversation: `ask` replaces its attributes rather than mutating them."""
        return copy.copy(self.conversation)

    def begin(self, text: str, upload: Path | None) -> Turn:
        turn = Turn(text, upload, conversation_before=self.snapshot(), media_before=self.media,
                    resend_before=self.resend)
        self.turns.append(turn)
        self.notice = None
        self.stop_requested.clear()
        return turn

    def refuse(self, reason: str, files: list[Path] = ()) -> None:
        """A message refused before it became a turn: only the reason is kept (shown once), and its files are
        removed with the session's."""
        self.notice = reason
        self._receive(files)

    def take_upload(self, path: Path) -> Path:
        """The session's own copy of an upload (a hard link where possible): the server's file may be shared by
        identical uploads of other sessions, so each session removes only its own link, and the received file
        when it ends."""
        self._receive([path])
        own = self.new_file(path.name)
        try:
            os.link(path, own)
        except OSError:
            shutil.copyfile(path, own)
        return own

    def _receive(self, files: list[Path]) -> None:
        self._received.update(path for path in files if not is_example_file(path))

    def pop_turn(self) -> Turn | None:
        """Remove the last turn and return the model conversation and media to what they were before it."""
        if not self.turns:
            return None
        turn = self.turns.pop()
        if turn.conversation_before is not None:
            self.conversation = turn.conversation_before
        self.media = turn.media_before
        self.resend = turn.resend_before
        return turn

    @property
    def last_result(self) -> Result | None:
        for turn in reversed(self.turns):
            if turn.result is not None:
                return turn.result
        return None

    def new_file(self, name: str) -> Path:
        """A fresh path in this session's folder (names never repeat, so browsers never show stale files; they
        start with the session's id, so the server's copies of them are found when the session ends)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._files += 1
        return self.workdir / f"{self.id}_{self._files:03d}_{name}"

    def clear(self) -> None:
        self.conversation.drop_cache()  # the turns' copies of the conversation share it
        self.conversation = self.chat.new_conversation()
        self.pending_regions = []
        self.resend = None
        self.media = None
        self.turns = []
        self.notice = None
        self._remove_files()

    def close(self) -> None:
        """Free everything and remove the session's files (the tab closed, its time-to-live passed, or the server
        is shutting down)."""
        self.stop_requested.set()
        self.turns = []
        self.media = None
        self.conversation.drop_cache()
        self.conversation = self.chat.new_conversation()
        self.resend = None
        self._remove_files()

    def _remove_files(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)
        served = list(self.served.glob(f"*/{self.id}_*")) if self.served else []
        for path in [*self._received, *served]:
            path.unlink(missing_ok=True)
            try:
                path.parent.rmdir()  # the server's per-file folder, when nothing else is in it
            except OSError:
                pass
        self._received.clear()


def return_freed_memory() -> None:
    """Collect the ended session's objects and hand the freed heap back to the system: glibc keeps freed pages
    otherwise, so a long-running server's memory would stay at its busiest hour's level."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl, Windows): nothing to do
        pass


def close_session(session: Session | None) -> None:
    """`gr.State` delete callback."""
    if session is not None:
        session.close()


class Sessions:
    """The live sessions of one app, by the web session (browser tab or API client) they belong to: each is made
    here and ended when Gradio drops its state (idle past its time-to-live, or an hour after its tab closed: Gradio
    keeps a closed tab's state that long in case it reconnects), and all are ended when the server stops."""

    def __init__(self, chat: SegChat, root: Path | None = None, served: Path | None = None):
        self.chat = chat
        self.root = root
        self.served = served
        self._live: dict[str, Session] = {}
        self._lock = threading.Lock()

    def of(self, client: str, session: Session | None) -> Session:
        """`client`'s session: `session` (the one its state holds, live again if it had ended) or a new one."""
        session = session or Session(self.chat, self.root, self.served)
        with self._lock:
            self._live[client] = session
        return session

    def close(self, session: Session | None) -> None:
        """`gr.State` delete callback: the session ends."""
        if session is None:
            return
        with self._lock:
            self._live = {client: live for client, live in self._live.items() if live is not session}
        session.close()
        return_freed_memory()

    def close_all(self) -> None:
        with self._lock:
            live, self._live = list(self._live.values()), {}
        for session in live:
            session.close()

    def __len__(self) -> int:
        return len(self._live)
