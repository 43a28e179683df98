"""Turn generated token ids into the text shown to a person and one label per `[SEG]`.

`<p>the red apple</p> [SEG]` shows as "the red apple" and labels that object; a bare `[SEG]` shows as
"[mask N]". Work is done on ids, so only real `[SEG]` tokens count (never the characters "[SEG]").
"""

from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class MarkupIds:
    seg: int | None  # None: a plain VLM, whose answers have no [SEG]
    phrase_open: int | None
    phrase_close: int | None
    hidden: frozenset[int]  # special ids never shown (stop tokens, padding, media placeholders)

    @classmethod
    def from_tokenizer(cls, tokenizer: PreTrainedTokenizerBase, seg_token: str | None,
                       stop_ids: list[int]) -> "MarkupIds":
        def lookup(token: str | None) -> int | None:
            if token is None:
                return None
            i = tokenizer.convert_tokens_to_ids(token)
            return None if i is None or i == tokenizer.unk_token_id else i

        seg, p_open, p_close = lookup(seg_token), lookup("<p>"), lookup("</p>")
        hidden = (set(tokenizer.all_special_ids) | set(stop_ids)) - {seg, p_open, p_close}
        return cls(seg, p_open, p_close, frozenset(hidden))


@dataclass
class ParsedAnswer:
    text: str
    labels: list[str | None]  # one per [SEG], in order


def parse_answer(ids: list[int], tokenizer: PreTrainedTokenizerBase, markup: MarkupIds) -> ParsedAnswer:
    pieces: list[str] = []
    labels: list[str | None] = []
    run: list[int] = []
    phrase: list[int] | None = None  # ids inside an open <p>
    last_phrase: str | None = None  # a closed phrase waiting for its [SEG]

    def flush() -> str:
        text = tokenizer.decode(run, skip_special_tokens=False)
        run.clear()
        return text

    for i in ids:
        if i == markup.phrase_open:
            pieces.append(flush())
            phrase, last_phrase = [], None
        elif i == markup.phrase_close and phrase is not None:
            last_phrase = tokenizer.decode(phrase, skip_special_tokens=False).strip()
            pieces.append(last_phrase)
            phrase = None
        elif i == markup.seg:
            between = flush()
            labels.append(last_phrase if last_phrase is not None and not between.strip() else None)
            # A labelled object shows as its phrase alone; a bare one gets a numbered placeholder.
            pieces.append("" if labels[-1] is not None else between + f"[mask {len(labels)}]")
            last_phrase = None
        elif i in markup.hidden:
            continue
        elif phrase is not None:
            phrase.append(i)
        else:
            run.append(i)
    if phrase is not None:  # an unclosed <p> while streaming: show what it has so far
        pieces.append(tokenizer.decode(phrase, skip_special_tokens=False))
    pieces.append(flush())
    return ParsedAnswer("".join(pieces).strip().rstrip("\ufffd"), labels)
