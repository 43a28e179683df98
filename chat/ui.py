"""The Gradio app: layout and thin callbacks over `chat.handlers`.

Public API endpoints (for `gradio_client`): `/ask`, `/refine`, `/download`, `/find` (SAM 3 concept search) when
the model has concept search, and `/use` ("model" or "agent": which one answers) when an agent is served beside
the model. Every other event is private.
Per-user data lives only in the `gr.State` holding a `Session`; the model is shared read-only. Sessions remove
their files, Gradio's served copies of them and their uploads when they end; `launch` ends every live session when
the server stops.
"""

from __future__ import annotations

import functools
import signal
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import gradio as gr
from gradio.utils import get_upload_folder
from PIL import Image

from chat import drawing, examples, handlers, inputs
from chat.gpu import gpu
from chat.session import Session, Sessions
from chat.settings import AppSettings
from model.errors import InputError, SegChatError
from model.inference import SegChat
from model.media.image import mebibytes, megapixels, plain_number
from model.video.clip import FRAME_SAMPLINGS, PROPAGATION_MODES, VideoOptions

MODEL_WORK = "model"  # concurrency group of every event that runs the model

CSS = """
#canvas img { cursor: crosshair; }
#limits { font-size: 0.85em; opacity: 0.8; }
"""


MAX_LLM_FRAMES = 16


def limits_text(settings: AppSettings) -> str:
    """The limits line under the message box, in the words of the refusals, from the limits the handlers enforce."""
    image, video = settings.image, settings.video
    return (f"Images up to {mebibytes(image.max_file_bytes)} and {megapixels(image.max_pixels)}; "
            f"videos up to {mebibytes(video.max_file_bytes)}, {plain_number(video.max_duration_s)} s and "
            f"{video.max_side} px on the long side. Each turn segments at most {settings.budget.describe()} of a "
            "video: longer videos are sampled evenly. One file per message; follow-up questions are about the last "
            "file sent.")


@functools.cache
def _serve_examples_in_place(files: tuple[Path, ...]) -> None:
    """Once per process: Gradio's static paths are a global list that grows with every registration."""
    gr.set_static_paths(list(files))


def example_gallery(box: gr.MultimodalTextbox) -> gr.Examples:
    """The shipped examples under the message box: a click fills it (chain the turn to `.load_input_event`).
    Never cached: a Space must start fast. The files are served from the package as they are (not copied into
    Gradio's cache), so every click sends the same shipped file, which sessions never remove."""
    shipped = examples.load_examples()
    _serve_examples_in_place(tuple(Path(example.file) for example in shipped))
    return gr.Examples([[example.message] for example in shipped], inputs=[box], label="Try an example",
                       cache_examples=False, api_visibility="private", elem_id="examples")


def refused(err: SegChatError, action: str) -> gr.Error:
    """A problem a person caused, as an error toast (and an error for API clients), logged as one line."""
    handlers.log_refusal(action, err)
    return gr.Error(str(err), print_exception=False)


def video_options(propagation: str, llm_frames: float, sampling: str) -> VideoOptions:
    """The model's video options from the app's controls; values a client invented become an error toast."""
    try:
        return VideoOptions(propagation=inputs.choice(propagation, PROPAGATION_MODES, "propagation"),
                            llm_frames=inputs.whole_number(llm_frames, "number of LLM frames", 1, MAX_LLM_FRAMES),
                            frame_sampling=inputs.choice(sampling, FRAME_SAMPLINGS, "frame sampling"))
    except SegChatError as err:
        raise refused(err, "video options") from None


def _progress_callback(progress: gr.Progress) -> handlers.Progress:
    return lambda fraction, text: progress(fraction, desc=text)


def build_demo(chat: SegChat, settings: AppSettings = AppSettings(), title: str = "SegChat",
               agent: SegChat | None = None) -> gr.Blocks:
    """The whole app for one loaded model (and, with `agent`, a second one in agent mode that the person may choose
    to answer instead); call `launch(demo, ...)` to serve it."""
    # Session folders stay outside Gradio's cache (whose files Gradio deletes by age): it serves copies of them,
    # found and removed by the session when it ends, with the uploads.
    sessions = Sessions(chat, served=Path(get_upload_folder()))

    concepts = chat.concepts is not None  # concept search (SAM 3) configured
    answerers = {"model": chat, "agent": agent} if agent is not None else {}

    def session_of(state: Session | None, request: gr.Request) -> Session:
        return sessions.of(request.session_hash, state)

    def existing(state: Session | None) -> Session:
        """The caller's session for events about a result (none is made for a client that never asked)."""
        if state is None:
            raise InputError("There is no segmentation yet: ask a question about an image first.")
        return state

    def canvas_outputs(session: Session) -> tuple:
        view = handlers.canvas(session)
        files = [str(p) for p in session.last_result.downloads] if session.last_result else None
        first = view.objects[0][1] if view.objects else None
        return (view.image, gr.Video(value=view.video, visible=view.video is not None), view.legend,
                gr.CheckboxGroup(choices=view.objects, value=view.visible),
                gr.Radio(choices=view.objects, value=first), files)

    skip_canvas = tuple(gr.skip() for _ in range(6))

    def drawing_panel(state: Session | None) -> tuple:
        """The editor, emptied, with the picture under discussion to draw the next regions on (a video: the frame
        the canvas shows, and the slider to choose another); left as it is after a refused question, so that the
        person can fix it and ask again."""
        if state is not None and state.turns and state.turns[-1].error is not None:
            return gr.skip(), gr.skip()
        media = state.media if state is not None else None
        if media is None:
            return None, gr.Slider(visible=False)
        editor = {"background": media.frame, "layers": [], "composite": None}
        if media.kind == "image":
            return editor, gr.Slider(visible=False)
        return editor, gr.Slider(0, media.video.clip.length - 1, value=media.frame_index, visible=True)

    def drawing_frame(state: Session | None, frame: float) -> dict:
        """The editor, emptied, with another frame of the video to draw on."""
        return {"background": handlers.drawing_frame(existing(state), frame), "layers": [], "composite": None}

    def run_turn(session: Session, turns: Iterator[list]) -> Iterator[tuple]:
        busy = gr.MultimodalTextbox(value=None, interactive=False)
        for chat_messages in turns:
            yield (chat_messages, busy, *skip_canvas, session)
        yield (handlers.messages(session), gr.MultimodalTextbox(value=None, interactive=True),
               *canvas_outputs(session), session)

    @gpu()
    def ask(message: dict | None, state: Session | None, propagation: str, llm_frames: float, sampling: str,
            regions: object, request: gr.Request,
            progress: gr.Progress = gr.Progress(track_tqdm=True)) -> Iterator[tuple]:
        """The public /ask: regions as JSON."""
        yield from ask_drawn(message, state, propagation, llm_frames, sampling, regions, None, False, 0, request,
                             progress)

    @gpu()
    def ask_drawn(message: dict | None, state: Session | None, propagation: str, llm_frames: float, sampling: str,
                  regions: object, editor: dict | None, exact: bool, frame: float, request: gr.Request,
                  progress: gr.Progress = gr.Progress(track_tqdm=True)) -> Iterator[tuple]:
        """The page's ask: with the regions drawn in the editor too."""
        options = video_options(propagation, llm_frames, sampling)
        session = session_of(state, request)
        try:
            text, files = inputs.message_parts(message)
            pointed = inputs.regions(regions)
            drawn = drawing.layer_masks(editor)
            frame = inputs.whole_number(frame, "frame", 0, 10**9)
            picture = drawing.editor_picture(editor) if drawn and not files and session.media is None else None
        except SegChatError as err:
            raise refused(err, "ask") from None
        if picture is not None:  # regions drawn on a picture loaded in the panel: that picture is the upload
            files = [session.new_file("drawn.png")]
            Image.fromarray(picture).save(files[0])
        yield from run_turn(session, handlers.ask(session, text, files, settings, options,
                                                  _progress_callback(progress), pointed, drawn, bool(exact),
                                                  frame))

    @gpu()
    def retry(state: Session | None, propagation: str, llm_frames: float, sampling: str, request: gr.Request,
              progress: gr.Progress = gr.Progress(track_tqdm=True)) -> Iterator[tuple]:
        session = session_of(state, request)
        options = video_options(propagation, llm_frames, sampling)
        yield from run_turn(session, handlers.retry(session, settings, options, _progress_callback(progress)))

    def use(choice: str, state: Session | None, request: gr.Request) -> tuple:
        session = session_of(state, request)
        if choice not in answerers:
            raise refused(InputError(f"Unknown choice {choice!r}; choose one of {sorted(answerers)}."), "use")
        session.switch(answerers[choice])
        return handlers.messages(session), session

    def stop(state: Session | None) -> None:
        if state is not None:
            handlers.stop(state)

    def rewind(action: Callable[[Session], list]) -> Callable:
        def callback(state: Session | None, request: gr.Request) -> tuple:
            session = session_of(state, request)
            return (action(session), *canvas_outputs(session), session)
        return callback

    def click_point(evt: gr.SelectData) -> tuple[float, float]:
        return float(evt.index[0]), float(evt.index[1])

    def person_errors(fn: Callable) -> Callable:
        """Problems a person caused become a toast (and an error for API clients), not a server error."""
        def wrapped(*args):
            try:
                return fn(*args)
            except SegChatError as err:
                raise refused(err, fn.__name__) from None
        return wrapped

    @gpu(duration=30)
    @person_errors
    def refine(state: Session | None, index: float | None, x: float, y: float, kind: str) -> tuple:
        session = existing(state)
        include = inputs.choice(kind, ("include", "exclude"), "click kind") == "include"
        handlers.refine(session, index, x, y, include=include)
        return canvas_outputs(session)[0], [str(p) for p in handlers.downloads(session)], session

    @person_errors
    def reset(state: Session | None, index: float | None) -> tuple:
        session = existing(state)
        handlers.reset_refinement(session, index)
        return canvas_outputs(session)[0], [str(p) for p in handlers.downloads(session)]

    @person_errors
    def point_at(state: Session | None, index: float | None) -> list:
        return handlers.point_at(existing(state), index)

    @person_errors
    def toggle(state: Session | None, shown: list[int]) -> str | None:
        return str(handlers.set_visible(existing(state), shown or []).image)

    @person_errors
    def download(state: Session | None) -> list[str]:
        return [str(p) for p in handlers.downloads(existing(state))]

    @gpu(duration=60)
    def find(text: str, state: Session | None, threshold: float, request: gr.Request,
             progress: gr.Progress = gr.Progress(track_tqdm=True)) -> tuple:
        session = session_of(state, request)
        chat_messages = handlers.find(session, text, threshold, _progress_callback(progress))
        return (chat_messages, *canvas_outputs(session), session)

    @gpu(duration=60)
    def find_every(state: Session | None, index: float | None, threshold: float, request: gr.Request,
                   progress: gr.Progress = gr.Progress(track_tqdm=True)) -> tuple:
        session = session_of(state, request)
        chat_messages = handlers.find(session, "", threshold, _progress_callback(progress),
                                      exemplar=0 if index is None else index)
        return (chat_messages, *canvas_outputs(session), session)

    with gr.Blocks(title=title, delete_cache=(settings.cache_ttl_s, settings.cache_ttl_s),
                   analytics_enabled=False) as demo:
        state = gr.State(None, time_to_live=settings.session_ttl_s, delete_callback=sessions.close)
        gr.Markdown(f"## {title}\nAsk about an image or a video; each object in the answer gets its own colour. "
                    "Follow-up questions are about the same picture.")
        with gr.Row():
            with gr.Column(scale=3):
                chatbot = gr.Chatbot(label="Chat", elem_id="chatbot", height=560, feedback_options=None, show_label=False)
                box = gr.MultimodalTextbox(label="Message", file_types=["image", "video"], file_count="single",
                                           elem_id="ask-box",
                                           placeholder="Upload an image or video and ask, e.g. “Segment the food "
                                                       "richest in vitamin C and explain why.”",
                                           show_label=False)
                gallery = example_gallery(box)
                gr.Markdown(limits_text(settings), elem_id="limits")
                with gr.Accordion("Point at something (regions)", open=False, elem_id="regions-panel"):
                    gr.Markdown("Brush over what you mean, one layer per region (add a layer for the next one), "
                                "then ask about “region 1”, “region 2”… A stroke is read as clicks on the object "
                                "under it; tick the box to use the strokes themselves as the region. Draw on the "
                                "picture under discussion, or load one here. On a video, choose the frame with the "
                                "slider: each region is followed through the clip.")
                    editor = gr.ImageEditor(label="Regions", type="numpy", image_mode="RGBA", layers=True,
                                            sources=["upload", "clipboard"], transforms=[],
                                            brush=gr.Brush(default_size=12, colors=["#ff1744"],
                                                           color_mode="fixed"),
                                            elem_id="regions-editor", height=360)
                    frame = gr.Slider(0, 1, value=0, step=1, label="Frame to draw on (a new frame clears the drawing)",
                                      visible=False, elem_id="regions-frame")
                    exact = gr.Checkbox(False, label="Use my drawing as the exact mask", elem_id="regions-exact")
                    # The public /ask endpoint's regions as JSON (points, box, COCO-RLE mask), see README.
                    regions_json = gr.JSON([], visible=False, label="regions")
                    api_ask = gr.Button(visible=False)  # the public /ask (the page sends its drawing too)
                answerer = gr.Radio([("the model ([SEG] masks)", "model"), ("the agent (VLM + SAM 3)", "agent")],
                                    value="model", label="Answer with", visible=agent is not None,
                                    elem_id="answerer")
                with gr.Row():
                    retry_btn = gr.Button("Retry", size="sm", elem_id="retry")
                    undo_btn = gr.Button("Undo", size="sm", elem_id="undo")
                    clear_btn = gr.Button("Clear", size="sm", elem_id="clear")
                    stop_btn = gr.Button("Stop", size="sm", variant="stop", elem_id="stop")
                with gr.Accordion("Video options", open=False):
                    propagation = gr.Radio(["sa2va", "memory"], value="sa2va", label="Mask propagation")
                    llm_frames = gr.Slider(1, MAX_LLM_FRAMES, value=5, step=1,
                                           label="Frames the language model sees")
                    sampling = gr.Radio(["first", "uniform"], value="first", label="Which frames it sees")
                with gr.Row(visible=concepts):
                    find_box = gr.Textbox(label="Find all …", placeholder="car, yellow school bus", scale=3,
                                          elem_id="find-box")
                    threshold = gr.Slider(0, 1, value=0.5, step=0.05, label="Score threshold", scale=2,
                                          elem_id="threshold")
                    find_btn = gr.Button("Find all", size="sm", scale=1, elem_id="find")
            with gr.Column(scale=2):
                canvas = gr.Image(label="Last result (click to refine the selected object)", type="filepath",
                                  interactive=False, elem_id="canvas", buttons=["download", "fullscreen"])
                canvas_video = gr.Video(label="Overlay video", visible=False, interactive=False,
                                        elem_id="canvas-video")
                legend = gr.HTML(label="Legend", elem_id="legend")
                shown = gr.CheckboxGroup(label="Show objects", elem_id="shown")
                target = gr.Radio(label="Object to refine", elem_id="target")
                with gr.Row():
                    click_kind = gr.Radio(["include", "exclude"], value="include", label="A click marks",
                                          elem_id="click-kind")
                    reset_btn = gr.Button("Reset object", size="sm", elem_id="reset")
                    every_btn = gr.Button("Find every one", size="sm", visible=concepts, elem_id="find-every")
                    point_btn = gr.Button("Ask about it", size="sm", elem_id="point-at")
                files = gr.File(label="Downloads: masks (PNG zip), COCO RLE JSON, overlay", file_count="multiple",
                                interactive=False, elem_id="downloads")
                # Plain-number inputs of the public /refine endpoint (filled from the radio and the click).
                target_index = gr.Number(label="object index (0-based)", visible=False)
                click_x = gr.Number(label="x (pixels)", visible=False)
                click_y = gr.Number(label="y (pixels)", visible=False)
                download_btn = gr.Button(visible=False)

        turn_outputs = [chatbot, box, canvas, canvas_video, legend, shown, target, files, state]
        model_work = {"concurrency_id": MODEL_WORK, "concurrency_limit": settings.concurrency}
        ask_inputs = [box, state, propagation, llm_frames, sampling, regions_json]
        box.submit(ask_drawn, [*ask_inputs, editor, exact, frame], turn_outputs, api_visibility="private",
                   **model_work).then(drawing_panel, [state], [editor, frame], api_visibility="private", queue=False)
        frame.input(person_errors(drawing_frame), [state, frame], [editor], api_visibility="private", queue=False)
        api_ask.click(ask, ask_inputs, turn_outputs, api_name="ask", **model_work)
        gallery.load_input_event.then(ask, ask_inputs, turn_outputs, api_visibility="private", **model_work).then(
            drawing_panel, [state], [editor, frame], api_visibility="private", queue=False)
        retry_btn.click(retry, [state, propagation, llm_frames, sampling], turn_outputs,
                        api_visibility="private", **model_work).then(
            drawing_panel, [state], [editor, frame], api_visibility="private", queue=False)
        stop_btn.click(stop, [state], None, api_visibility="private", queue=False)
        if agent is not None:
            answerer.change(use, [answerer, state], [chatbot, state], api_name="use", **model_work)
        rewind_outputs = [chatbot, canvas, canvas_video, legend, shown, target, files, state]
        for button, action in ((undo_btn, handlers.undo), (clear_btn, handlers.clear)):
            button.click(rewind(action), [state], rewind_outputs, api_visibility="private", trigger_mode="once").then(
                drawing_panel, [state], [editor, frame], api_visibility="private", queue=False)
        target.change(lambda index: index, target, target_index, api_visibility="private", queue=False)
        canvas.select(click_point, None, [click_x, click_y], api_visibility="private").then(
            refine, [state, target_index, click_x, click_y, click_kind], [canvas, files, state], api_name="refine",
            **model_work)
        reset_btn.click(reset, [state, target_index], [canvas, files], api_visibility="private", **model_work)
        shown.input(toggle, [state, shown], [canvas], api_visibility="private")
        point_btn.click(point_at, [state, target_index], [chatbot], api_visibility="private")
        download_btn.click(download, [state], [files], api_name="download")
        if concepts:
            find_outputs = [chatbot, canvas, canvas_video, legend, shown, target, files, state]
            find_btn.click(find, [find_box, state, threshold], find_outputs, api_name="find", **model_work)
            find_box.submit(find, [find_box, state, threshold], find_outputs, api_visibility="private", **model_work)
            every_btn.click(find_every, [state, target_index, threshold], find_outputs, api_visibility="private",
                            **model_work)

    demo.queue(max_size=settings.queue_size, default_concurrency_limit=1)
    demo.segchat_sessions = sessions  # read by `launch`, which ends them when the server stops
    return demo


def _ending(sessions: Sessions) -> Callable:
    """A server lifespan that ends every live session (and so removes their files) when the server stops."""
    @asynccontextmanager
    async def lifespan(app) -> AsyncIterator[None]:
        try:
            yield
        finally:
            sessions.close_all()
    return lifespan


def _interrupt(signum: int, frame) -> None:
    raise KeyboardInterrupt


def launch(demo: gr.Blocks, host: str = "127.0.0.1", port: int = 7860, share: bool = False,
           settings: AppSettings = AppSettings(), block: bool = True) -> None:
    """Serve the app with the safety settings this project relies on. When blocking, SIGTERM stops the server as
    Ctrl-C does (so the sessions end and remove their files)."""
    if block:
        signal.signal(signal.SIGTERM, _interrupt)
    demo.launch(server_name=host, server_port=port, share=share, max_file_size=settings.max_file_bytes,
                strict_cors=True, ssr_mode=False, show_error=False, prevent_thread_lock=not block,
                footer_links=["api"], css=CSS, app_kwargs={"lifespan": _ending(demo.segchat_sessions)})
