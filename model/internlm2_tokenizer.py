"""InternLM2's tokenizer without remote code: a sentencepiece model (`tokenizer.model`) read with transformers'
`SentencePieceBackend`.

Sa2VA-8B and Sa2VA-26B (InternVL2.5 with InternLM2.5) ship only `tokenizer.model` plus the remote
`InternLM2Tokenizer` class. That class splits the text on its added tokens, encodes each remaining piece with
sentencepiece as is (dummy prefix and byte fallback included), and puts `<s>` first; this one does the same, and
decodes as it does (checked id for id and string for string against the official class by
`tests/model/sa2va/test_internlm2.py`).
`load_tokenizer` picks it for such folders and `AutoTokenizer` for every other one.
"""

from __future__ import annotations

import json
from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerBase
from transformers.tokenization_utils_sentencepiece import SentencePieceBackend

from model.errors import CheckpointError

# `tokenizer_class` values of the published InternLM2 checkpoints (slow and fast remote classes).
INTERNLM2_CLASSES = ("InternLM2Tokenizer", "InternLM2TokenizerFast")


class InternLM2Tokenizer(SentencePieceBackend):
    """Sentencepiece tokenizer with InternLM2's semantics: `<s>` before each encoded text (`add_bos_token`), no
    `</s>` after it (`add_eos_token`), added tokens kept whole."""

    vocab_files_names = {"vocab_file": "tokenizer.model"}
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(self, vocab_file: str, unk_token: str = "<unk>", bos_token: str = "<s>", eos_token: str = "</s>",
                 pad_token: str = "</s>", add_bos_token: bool = True, add_eos_token: bool = False, **kwargs) -> None:
        self.add_bos_token = add_bos_token
        self.add_eos_token = add_eos_token
        pattern = {(True, True): "bos_eos", (True, False): "bos", (False, True): "eos"}.get(
            (add_bos_token, add_eos_token), "none")
        kwargs.pop("decode_with_prefix_space", None)  # a remote-class option with no effect on encoding
        # sentencepiece encodes each piece as is, dummy prefix included (the remote class's `_tokenize`)
        kwargs.update(legacy=True, special_tokens_pattern=pattern)
        super().__init__(vocab_file=vocab_file, unk_token=unk_token, bos_token=bos_token, eos_token=eos_token,
                         pad_token=pad_token, add_bos_token=add_bos_token, add_eos_token=add_eos_token, **kwargs)

    def _decode(self, token_ids: int | list[int], skip_special_tokens: bool = False,
                clean_up_tokenization_spaces: bool | None = None, spaces_between_special_tokens: bool = True,
                **kwargs) -> str:
        """Text as the official class decodes it (under the transformers version it targets): the tokens added
        after the sentencepiece vocabulary (`<img>`, `[SEG]`, `<p>`...) stand alone, joined to the text around them
        by spaces; the runs between them go through `convert_tokens_to_string`."""
        ids = [token_ids] if isinstance(token_ids, int) else list(token_ids)
        special = set(self.all_special_tokens)
        tokens = [t for t in self.convert_ids_to_tokens(ids) if not (skip_special_tokens and t in special)]
        vocab_size = self.sp_model.get_piece_size()
        standalone = {token for token, i in self._added_tokens_encoder.items() if i >= vocab_size}
        texts: list[str] = []
        run: list[str] = []
        for token in tokens:
            if token in standalone:
                if run and (text := self.convert_tokens_to_string(run)):
                    texts.append(text)
                run = []
                texts.append(token)
            else:
                run.append(token)
        if run:
            texts.append(self.convert_tokens_to_string(run))
        return (" " if spaces_between_special_tokens else "").join(texts)

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        """The official class's run decoding: sentencepiece pieces decoded together (spaces and byte fallback
        restored), a space before the first of consecutive special tokens, then transformers' clean-up of spaces
        before punctuation (" ." → ".", " 's" → "'s"...)."""
        special = set(self.all_special_tokens)
        out, pieces, after_special = "", [], False
        for token in tokens:
            if token in special:
                if not after_special:
                    out += " "
                out += self.sp_model.decode(pieces) + token
                pieces, after_special = [], True
            else:
                pieces.append(token)
                after_special = False
        return self.clean_up_tokenization(out + self.sp_model.decode(pieces))


def _tokenizer_class(folder: Path) -> str | None:
    config = folder / "tokenizer_config.json"
    return json.loads(config.read_text()).get("tokenizer_class") if config.is_file() else None


def load_tokenizer(folder: str | Path) -> PreTrainedTokenizerBase:
    """The tokenizer of a checkpoint folder, never from remote code; CheckpointError when it cannot be built."""
    folder = Path(folder)
    name = _tokenizer_class(folder)
    try:
        if name in INTERNLM2_CLASSES:
            if not (folder / "tokenizer.model").is_file():
                raise CheckpointError(f"{folder}: its tokenizer ({name}) needs tokenizer.model, which is missing.")
            return InternLM2Tokenizer.from_pretrained(folder)
        return AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    except (OSError, ValueError, ImportError) as err:
        raise CheckpointError(f"{folder}: the tokenizer (tokenizer_class {name!r}) could not be built without remote "
                              f"code ({type(err).__name__}: {err}).") from err
