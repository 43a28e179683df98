"""What the chat does, as plain functions over a `Session`; the Gradio callbacks in `chat/ui.py` only adapt them.

Every problem a person can cause (bad file, too long a text, a click before any answer) ends as a message in the
chat or an `InputError`/`MediaError`; the session stays usable. A message refused for its text is not kept: only
the reason is shown. Refusals are logged as one line without the person's content; faults keep their traceback.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from chat import inputs
from chat.drawing import drawn_regions
from chat.refine import interior_point, refine_mask
from chat.render import colored_answer_html, legend_html
from chat.session import Media, Result, Session, Turn
from chat.settings import AppSettings
from chat.views import write_canvas, write_region_view, write_result_files
from model.agent.loop import AgentStep
from model.errors import InputError, SegChatError
from model.inference import Reply
from model.media.export import Progress
from model.media.image import check_media_file, load_image
from model.media.kind import media_kind
from model.media.masks import mask_box
from model.media.render import palette
from model.media.video_file import VideoFile
from model.regions import Region
from model.segmenters.base import found_summary
from model.video.clip import VideoClip, VideoOptions

log = logging.getLogger(__name__)

Message = dict  # {"role": "user" | "assistant", "content": str | {"path": str}}


@dataclass
class CanvasView:
    image: Path | None
    video: Path | None
    legend: str
    objects: list[tuple[str, int]]  # (label shown, object index)
    visible: list[int]


def object_names(labels: Sequence[str | None], found: Sequence[bool] = ()) -> list[str]:
    """"1. car", ..., with " (not found)" after objects that are not there."""
    absent = [not there for there in found] or [False] * len(labels)
    return [f"{i + 1}. {label or f'object {i + 1}'}" + (" (not found)" if gone else "")
            for i, (label, gone) in enumerate(zip(labels, absent))]


def parse_phrases(text: str) -> list[str]:
    """The phrases of a "Find all …" request: comma- or semicolon-separated ("car, yellow bus")."""
    return [p.strip() for p in text.replace(";", ",").split(",") if p.strip()]


def _user_text(text: str) -> str:
    # The chat renders Markdown/HTML; a person's text is shown literally.
    return html.escape(text)


def _answer_html(turn: Turn) -> str:
    labels = turn.result.labels if turn.result else []
    answer = colored_answer_html(turn.answer, labels, palette(len(labels)))
    if turn.stopped:
        answer += " <em>(stopped)</em>"
    if turn.trace:
        steps = "".join(f"<li>{html.escape(line)}</li>" for line in turn.trace)
        answer += f"<details><summary>How I found it</summary><ol>{steps}</ol></details>"
    return answer


def trace_lines(steps: Sequence[AgentStep]) -> list[str]:
    """An agent turn's trace as the app shows it: every tool call, candidate set and decision."""
    lines = []
    for step in steps:
        if step.kind == "candidates":
            found = ", ".join(f"{n}: {phrase} ({score:.2f})" for n, phrase, score in step.candidates)
            lines.append(f"SAM 3 found {found}" if found else "SAM 3 found nothing")
        elif step.kind != "answer":
            lines.append(f"{step.kind}: {step.text}")
    return lines


def messages(session: Session) -> list[Message]:
    """The whole chat as Gradio message dicts, rebuilt from the session (so undo/retry stay consistent)."""
    out: list[Message] = []
    for turn in session.turns:
        out.append({"role": "user", "content": _user_text(turn.text)})
        if turn.upload is not None:
            out.append({"role": "user", "content": {"path": str(turn.upload)}})
        if turn.region_view is not None:
            out.append({"role": "user", "content": {"path": str(turn.region_view)}})
        if turn.answer or turn.stopped:
            out.append({"role": "assistant", "content": _answer_html(turn)})
        elif turn.error is None and turn.result is None:
            out.append({"role": "assistant", "content": "…"})
        if turn.result is not None and turn.result.overlay is not None:
            out.append({"role": "assistant", "content": {"path": str(turn.result.overlay)}})
        for note in turn.warnings:
            out.append({"role": "assistant", "content": f"ℹ️ {html.escape(note)}"})
        if turn.error is not None:
            out.append({"role": "assistant", "content": f"⚠️ {html.escape(turn.error)}"})
    if session.notice is not None:
        out.append({"role": "assistant", "content": f"⚠️ {html.escape(session.notice)}"})
    if session.pending_regions:
        first = len(session.conversation.regions) + 1
        named = "; ".join(f"region {first + k} is {what}" for k, (_, what) in enumerate(session.pending_regions))
        out.append({"role": "assistant", "content": f"ℹ️ In your next question, {html.escape(named)}."})
    return out


def log_refusal(action: str, err: SegChatError) -> None:
    """One line per refused request: the action and the kind of problem, never the person's content."""
    log.info("%s refused: %s", action, type(err).__name__)


def _open_media(path: Path, settings: AppSettings, video: VideoOptions) -> tuple[dict, list[str]]:
    """Validate an upload (a video is probed here, once, and fitted to the turn's work budget); returns the
    `ask_stream` arguments that send it and the notices to show."""
    if media_kind(path) == "video":
        file = VideoFile(path, settings.video)
        options, notices = settings.budget.fit(file.info, replace(video, max_frames=settings.video_max_frames))
        return {"video": VideoClip(file, options)}, notices
    return {"image": load_image(path, settings.image)}, []


def _media(name: str, media_args: dict, session: Session) -> Media:
    """The app's record of an upload once the model has taken it: the model's own media state."""
    if "video" in media_args:
        return Media(name, video=session.conversation.media)
    return Media(name, image=np.asarray(media_args["image"]))


def _drawn_regions(session: Session, media_args: dict, drawn: list[np.ndarray], exact: bool,
                   frame: int) -> list[Region]:
    """The editor's layers as regions on the image being sent, or on the media under discussion (on a video, on
    its frame `frame`)."""
    if "video" in media_args:
        raise InputError("Send the video first, then draw the regions on one of its frames.")
    if "image" in media_args:
        return drawn_regions(drawn, media_args["image"].size, exact)
    media = session.media
    if media is None:
        raise InputError("Upload the picture the regions are drawn on.")
    if media.kind == "image":
        return drawn_regions(drawn, (media.image.shape[1], media.image.shape[0]), exact)
    height, width = media.video.clip.size
    return [replace(region, frame=frame) for region in drawn_regions(drawn, (width, height), exact)]


def drawing_frame(session: Session, frame: int | float | None) -> np.ndarray:
    """Frame `frame` of the video under discussion, to draw regions on."""
    media = session.media
    if media is None or media.kind != "video":
        raise InputError("There is no video in this conversation to draw on.")
    t = inputs.whole_number(frame, "frame", 0, media.video.clip.length - 1)
    return media.video.clip.read([t])[0]


def _result(media: Media, reply: Reply) -> Result | None:
    if not reply.segments:
        return None
    masks = [s.mask for s in reply.segments]
    return Result(media, [s.label for s in reply.segments], masks, [s.score for s in reply.segments],
                  visible=[True] * len(masks), model_masks=list(masks), found=[s.found for s in reply.segments])


def ask(session: Session, text: str, files: Sequence[str | Path] | None = None,
        settings: AppSettings = AppSettings(), video: VideoOptions = VideoOptions(),
        progress: Progress | None = None, regions: Sequence[Region] = (), drawn: Sequence[np.ndarray] = (),
        exact: bool = False, frame: int = 0) -> Iterator[list[Message]]:
    """One turn: yields the chat after every streamed piece of the answer; the session holds the outcome.

    A new upload replaces the media under discussion; without one the question is about the current media.
    `video` applies to a new video upload; on a follow-up about a video only its `propagation` is used.
    `regions` point at things on the image or video (see `Conversation.ask`), and so do the layers `drawn` in the
    app's editor (`chat.drawing`: clicks along the strokes, or with `exact` the strokes as masks), drawn on the
    image or on frame `frame` of the video under discussion; the person's message then shows them as marks.
    """
    upload = None
    try:  # the message is checked before anything of it is stored
        upload = inputs.upload(files)
        text = session.chat.processor.check_text(inputs.message_text(text))
    except SegChatError as err:
        log_refusal("ask", err)
        session.refuse(str(err), [upload] if upload is not None else [])
        yield messages(session)
        return
    turn = session.begin(text, None)
    turn.regions = [region for region, _ in session.pending_regions] + list(regions)
    try:
        yield messages(session)
        media_args, notices = {}, []
        if upload is not None:
            check_media_file(upload, settings.max_file_bytes, "uploaded")
            turn.upload = upload = session.take_upload(upload)
        source = upload or session.resend  # resend: the current media, for a newly chosen model
        if source is not None:
            media_args, notices = _open_media(source, settings, video)
        elif session.media is not None and session.media.kind == "video":
            media_args["propagation"] = video.propagation  # the only option a follow-up may change
        if drawn:
            turn.regions = turn.regions + _drawn_regions(session, media_args, list(drawn), exact, frame)
        media_args["regions"] = turn.regions
        reply = yield from _stream_answer(session, turn, text, media_args)
        if reply is not None:  # None: stopped, and the conversation is left as it was
            session.pending_regions = []
            if source is not None:
                session.media = _media(source.name, media_args, session)
                session.resend = None
            media = session.media
            if reply.regions:
                first = len(session.conversation.regions) - len(reply.regions) + 1
                t = turn.regions[0].frame or 0  # a video turn shows the frame its first region is drawn on
                picture = media.frame if media.kind == "image" else media.video.clip.read([t])[0]
                masks = [r.mask if media.kind == "image" else r.mask[t] for r in reply.regions]
                turn.region_view = write_region_view(session, picture, masks, first)
            turn.warnings = notices + list(reply.warnings)
            turn.trace = trace_lines(reply.trace)
            turn.result = _result(media, reply) if media is not None else None
            if turn.result is not None:
                write_result_files(session, turn.result, progress)
    except SegChatError as err:
        log_refusal("ask", err)
        turn.error = str(err)
    except Exception:
        log.exception("ask failed")
        turn.error = "Something went wrong while answering. Please try again or rephrase the question."
    yield messages(session)


def _stream_answer(session: Session, turn: Turn, text: str, media_args: dict):
    """Stream the answer into `turn`; returns the Reply, or None when the person pressed stop."""
    stream = session.conversation.ask_stream(text, **media_args)
    try:
        for item in stream:
            if isinstance(item, Reply):
                turn.answer = item.text
                return item
            turn.answer = item
            if session.stop_requested.is_set():
                turn.stopped = True
                return None
            yield messages(session)
    finally:
        stream.close()  # ends generation and frees the model when stopped early
    raise RuntimeError("the answer stream ended without a reply")


def find(session: Session, text: str, threshold: float | None = None, progress: Progress | None = None,
         exemplar: int | float | None = None) -> list[Message]:
    """A "Find all …" turn: every instance of each phrase in `text` in the current image or video (SAM 3, no language
    model), or, with `exemplar`, every instance of the last result's object `exemplar` (its phrase, its mask's
    box as a positive example). The conversation itself does not change, so undo just drops the turn."""
    turn: Turn | None = None
    try:
        if exemplar is not None:
            result = _require_result(session)
            i = inputs.object_index(exemplar, len(result.masks))
            label = result.labels[i]
            if not label:
                raise InputError(f"Object {i + 1} has no name to look for; type it in “Find all”.")
            turn = session.begin(f"Find every one: {label}", None)
            box = mask_box(result.masks[i]) if result.media.kind == "image" and i in result.found_indices else None
            reply = session.conversation.find(label, boxes=[box] if box else [], score_threshold=threshold)
        else:
            turn = session.begin(f"Find all: {text or ''}", None)
            reply = session.conversation.find(parse_phrases(text or ""), score_threshold=threshold)
        turn.answer = reply.text
        turn.warnings = list(reply.warnings)
        turn.result = _result(session.media, reply)
        write_result_files(session, turn.result, progress)
    except SegChatError as err:
        turn = turn or session.begin(f"Find all: {text or ''}", None)
        turn.error = str(err)
    except Exception:
        log.exception("find failed")
        turn = turn or session.begin(f"Find all: {text or ''}", None)
        turn.error = "Something went wrong while looking for the objects. Please try again."
    return messages(session)


def stop(session: Session) -> None:
    session.stop_requested.set()


def undo(session: Session) -> list[Message]:
    session.pop_turn()
    return messages(session)


def retry(session: Session, settings: AppSettings = AppSettings(), video: VideoOptions = VideoOptions(),
          progress: Progress | None = None) -> Iterator[list[Message]]:
    """Ask the last question again (with its upload, if it had one) from the state before it."""
    turn = session.pop_turn()
    if turn is None:
        yield messages(session)
        return
    yield from ask(session, turn.text, [turn.upload] if turn.upload else None, settings, video, progress,
                   turn.regions)


def clear(session: Session) -> list[Message]:
    session.clear()
    return messages(session)


def canvas(session: Session) -> CanvasView:
    """The last result for the canvas beside the chat: visible objects drawn, legend, object list."""
    result = session.last_result
    if result is None:
        return CanvasView(None, None, "", [], [])
    names = object_names(result.labels, result.found)
    video = result.overlay if result.media.kind == "video" else None
    found = result.found or [True] * len(names)
    repeated = len(set(result.labels)) < len(result.labels) or not all(found)
    summary = found_summary(result.labels, found).replace(", ", " · ") if repeated else ""
    return CanvasView(write_canvas(session, result), video, legend_html(names, palette(len(names)), summary),
                      [(name, i) for i, name in enumerate(names)],
                      [i for i, on in enumerate(result.visible) if on])


def set_visible(session: Session, indices: Sequence[int]) -> CanvasView:
    result = _require_result(session)
    wanted = set(inputs.object_indices(indices, len(result.masks)))
    result.visible = [i in wanted for i in range(len(result.masks))]
    return canvas(session)


def _require_result(session: Session) -> Result:
    result = session.last_result
    if result is None:
        raise InputError("There is no segmentation yet: ask a question about an image first.")
    return result


def refine(session: Session, index: int | float | None, x: float, y: float, include: bool = True) -> Result:
    """Add a click on the last result's image and re-decode object `index` from all its clicks so far."""
    result = _require_result(session)
    if session.chat.model.sam2 is None:
        raise InputError("Clicks are decoded by SAM2, which a plain vision-language model in agent mode does not "
                         "have: ask again in other words, or use “Find all” to look for other phrases.")
    if result.media.kind != "image" or result.media is not session.media:
        raise InputError("Clicks refine the masks of the current image; video masks cannot be refined here.")
    i = inputs.object_index(index, len(result.masks))
    x, y = inputs.finite_number(x, "x coordinate"), inputs.finite_number(y, "y coordinate")
    height, width = result.media.frame.shape[:2]
    if not (0 <= x < width and 0 <= y < height):
        raise InputError(f"The click ({x:.0f}, {y:.0f}) is outside the {width}×{height} image.")
    clicks = result.clicks.setdefault(i, [])
    clicks.append((float(x), float(y), 1 if include else 0))
    try:
        seed = interior_point(np.asarray(result.model_masks[i]))
        result.masks[i] = refine_mask(session.chat, session.conversation.image_features(), clicks, seed)
    except InputError:
        clicks.pop()
        raise
    result.visible[i] = True
    write_result_files(session, result)
    return result


def point_at(session: Session, index: int | float | None) -> list[Message]:
    """Make object `index` of the last answer a region of the next question ("ask about this object"); on a video,
    its mask on the first frame where it is."""
    result = _require_result(session)
    if result.media is not session.media:
        raise InputError("Only objects of the media under discussion can be pointed at.")
    i = inputs.object_index(index, len(result.masks))
    mask, frame = result.masks[i], None
    if result.media.kind == "video":
        frame = next((t for t in range(len(mask)) if mask.presence[t] > 0 and mask[t].any()), None)
        mask = mask[frame] if frame is not None else np.zeros(mask.size, dtype=bool)
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        raise InputError(f"Object {i + 1} has an empty mask: there is nothing to point at.")
    label = result.labels[i]
    session.pending_regions.append((Region(mask=mask, frame=frame),
                                    f"object {i + 1}" + (f", {label}" if label else "")))
    return messages(session)


def reset_refinement(session: Session, index: int | float | None) -> Result:
    """Forget the clicks on object `index` and restore the model's mask."""
    result = _require_result(session)
    i = inputs.object_index(index, len(result.masks))
    result.clicks.pop(i, None)
    result.masks[i] = result.model_masks[i]
    write_result_files(session, result)
    return result


def downloads(session: Session) -> list[Path]:
    """Per-object PNG masks (zip), COCO RLE JSON and the overlay of the last result."""
    return list(_require_result(session).downloads)
