"""Official-layout Sa2VA checkpoints built from the shared oracles, for flavours that have no oracle of their own.

The InternLM2 flavour (Sa2VA-8B/26B): the InternVL oracle's InternViT, mlp1, SAM2 and projector tensors are kept,
its Qwen2 language model is rewritten with InternLM2's names (a fused, kv-grouped `wqkv`, `wo`, `w1/w2/w3`,
`attention_norm`, `ffn_norm`, `tok_embeddings`, `output`) and the InternLM2 tokenizer fixture, and the config gets
the `llm_config` and `template` of the published repositories.
"""

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
INTERNLM2_TOKENIZER = FIXTURES / "internlm2_tokenizer"
TOKENIZER_FILES = ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json")


def fuse_wqkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kv_heads: int) -> torch.Tensor:
    """InternLM2's fused projection: per kv head, its query heads then its key and value rows."""
    hidden = q.shape[1]
    head_dim = k.shape[0] // kv_heads
    groups = q.shape[0] // (kv_heads * head_dim)
    parts = [q.reshape(kv_heads, groups, head_dim, hidden), k.reshape(kv_heads, 1, head_dim, hidden),
             v.reshape(kv_heads, 1, head_dim, hidden)]
    return torch.cat(parts, dim=1).reshape(-1, hidden)


def internlm2_checkpoint(oracle: Path, dst: Path, seed: int = 0) -> Path:
    """A Sa2VA-8B-layout checkpoint (InternViT + InternLM2, `internlm2_chat`) at `dst`."""
    config = json.loads((oracle / "config.json").read_text())
    llm = config["llm_config"]
    tokens = json.loads((INTERNLM2_TOKENIZER / "added_tokens.json").read_text())
    vocab = max(tokens.values()) + 1
    generator = torch.Generator().manual_seed(seed)
    state = load_file(oracle / "model.safetensors")
    out = {k: v for k, v in state.items() if not k.startswith("language_model.")}
    prefix = "language_model.model."
    for i in range(llm["num_hidden_layers"]):
        old, new = f"{prefix}layers.{i}.", f"{prefix}layers.{i}."
        out[new + "attention.wqkv.weight"] = fuse_wqkv(*(state[f"{old}self_attn.{p}_proj.weight"] for p in "qkv"),
                                                       kv_heads=llm["num_key_value_heads"])
        out[new + "attention.wo.weight"] = state[old + "self_attn.o_proj.weight"]
        for src, name in (("gate", "w1"), ("down", "w2"), ("up", "w3")):
            out[f"{new}feed_forward.{name}.weight"] = state[f"{old}mlp.{src}_proj.weight"]
        out[new + "attention_norm.weight"] = state[old + "input_layernorm.weight"]
        out[new + "ffn_norm.weight"] = state[old + "post_attention_layernorm.weight"]
    out[prefix + "norm.weight"] = state[prefix + "norm.weight"]
    hidden = llm["hidden_size"]
    out[prefix + "tok_embeddings.weight"] = (torch.randn(vocab, hidden, generator=generator) * 0.5).bfloat16()
    out["language_model.output.weight"] = (torch.randn(vocab, hidden, generator=generator) * 0.1).bfloat16()

    dst.mkdir(parents=True)
    save_file(out, dst / "model.safetensors", metadata={"format": "pt"})
    config["template"] = "internlm2_chat"
    config["llm_config"] = {
        "architectures": ["InternLM2ForCausalLM"], "model_type": "internlm2", "auto_map": {},
        "hidden_size": hidden, "intermediate_size": llm["intermediate_size"],
        "num_hidden_layers": llm["num_hidden_layers"], "num_attention_heads": llm["num_attention_heads"],
        "num_key_value_heads": llm["num_key_value_heads"], "vocab_size": vocab, "rms_norm_eps": 1e-5,
        "rope_theta": 1000000, "rope_scaling": {"type": "dynamic", "factor": 2.0}, "bias": False,
        "max_position_embeddings": 32768, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2,
        "hidden_act": "silu", "tie_word_embeddings": False, "attn_implementation": "eager",
    }
    (dst / "config.json").write_text(json.dumps(config, indent=2))
    for name in TOKENIZER_FILES:
        shutil.copyfile(INTERNLM2_TOKENIZER / name, dst / name)
    return dst
