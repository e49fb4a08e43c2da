#!/usr/bin/env python3
"""Builds random-weight sentence-transformers folders for throughput benchmarks, offline.

  minilm: BERT in the all-MiniLM-L6-v2 shape (hidden 384, 6 layers, 12 heads, intermediate
          1536, vocab 30522, 512 positions) + mean pooling + Normalize.
  xlmr:   XLM-RoBERTa in the xlm-roberta-base / multilingual-e5-base shape (vocab 250002, hidden
          768, 12 layers, 12 heads, intermediate 3072, 514 positions, pad id 1) + mean pooling +
          Normalize.
  qwen3:  Qwen3 in the Qwen3-Embedding-0.6B shape (vocab 151669, hidden 1024, 28 layers, 16 heads
          / 8 kv heads, head_dim 128, intermediate 3072, tied embeddings) + last-token pooling +
          Normalize, padding on the left, the Qwen3-Embedding query instruction as a prompt.
  bert-base: BERT in the bert-base shape (hidden 768, 12 layers, 12 heads, intermediate 3072,
          vocab 30522, 512 positions) + mean pooling + Normalize (~420 MiB), for the
          gradient-checkpointing memory figures (bench/train_memory.sh).
  gemma:  Gemma3 text, bidirectional, in the full EmbeddingGemma-300m shape (vocab 262144,
          hidden 768, 24 layers, 3 heads / 1 kv head, head_dim 256, intermediate 1152)
          + mean pooling + Dense 768->3072 + Dense 3072->768 (no bias, Identity) + Normalize.

Both take their tokenizer files from --tokenizer-dir (default: models/all-MiniLM-L6-v2): a
BERT word-piece tokenizer is fine for throughput, its ids are all < 30522. The folder
layout follows /work/shared/PARITY.md (legacy module type strings, safetensors with
{"format": "pt"} metadata). The gemma folder is ~1.2 GB in fp32.

    .venv-ref/bin/python bench/reference/make_random_models.py --out /tmp/random-models --which both
    # -> /tmp/random-models/minilm-random, /tmp/random-models/embeddinggemma-random
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"]


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2) + "\n")


def copy_tokenizer(src: Path, dst: Path) -> None:
    found = [f for f in TOKENIZER_FILES if (src / f).is_file()]
    if "tokenizer.json" not in found and "vocab.txt" not in found:
        sys.exit(f"--tokenizer-dir {src}: no tokenizer.json or vocab.txt")
    for f in found:
        shutil.copy2(src / f, dst / f)


def pooling_config(dim: int, last_token: bool = False) -> dict:
    return {
        "word_embedding_dimension": dim,
        "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": not last_token,
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
        "pooling_mode_weightedmean_tokens": False,
        "pooling_mode_lasttoken": last_token,
        "include_prompt": True,
    }


def write_st_folder(
    out: Path,
    backbone,
    dim: int,
    max_seq_length: int,
    dense: list[tuple[int, int]],
    prompts: dict,
    tok_dir: Path,
    last_token: bool = False,
    padding_side: str | None = None,
) -> None:
    """Backbone at the root, then 1_Pooling, k_Dense..., N_Normalize, and the ST configs."""
    import torch
    from safetensors.torch import save_file

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    backbone.save_pretrained(out, safe_serialization=True)
    copy_tokenizer(tok_dir, out)
    if padding_side is not None:
        cfg_path = out / "tokenizer_config.json"
        cfg = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
        cfg["padding_side"] = padding_side
        write_json(cfg_path, cfg)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    write_json(out / "1_Pooling" / "config.json", pooling_config(dim, last_token))
    for in_f, out_f in dense:
        idx = len(modules)
        folder = f"{idx}_Dense"
        modules.append({"idx": idx, "name": str(idx), "path": folder, "type": "sentence_transformers.models.Dense"})
        write_json(
            out / folder / "config.json",
            {"in_features": in_f, "out_features": out_f, "bias": False, "activation_function": "torch.nn.modules.linear.Identity"},
        )
        linear = torch.nn.Linear(in_f, out_f, bias=False)  # torch's default (Kaiming-uniform) init
        save_file({"linear.weight": linear.weight.detach().contiguous()}, str(out / folder / "model.safetensors"), metadata={"format": "pt"})
    idx = len(modules)
    modules.append({"idx": idx, "name": str(idx), "path": f"{idx}_Normalize", "type": "sentence_transformers.models.Normalize"})
    (out / f"{idx}_Normalize").mkdir()
    write_json(out / "modules.json", modules)
    write_json(out / "sentence_bert_config.json", {"max_seq_length": max_seq_length, "do_lower_case": False})
    write_json(
        out / "config_sentence_transformers.json",
        {"prompts": prompts, "default_prompt_name": None, "similarity_fn_name": "cosine"},
    )


def make_minilm(out: Path, tok_dir: Path, hidden: int = 384, layers: int = 6) -> Path:
    from transformers import BertConfig, BertModel

    config = BertConfig(
        vocab_size=30522,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=12,
        intermediate_size=4 * hidden,
        hidden_act="gelu",
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        max_position_embeddings=512,
        type_vocab_size=2,
        initializer_range=0.02,
        layer_norm_eps=1e-12,
        pad_token_id=0,
        architectures=["BertModel"],
        dtype="float32",
    )
    model = BertModel(config).eval()
    write_st_folder(out, model, hidden, 256, [], {"query": "", "document": ""}, tok_dir)
    return out


def make_xlmr(out: Path, tok_dir: Path) -> Path:
    from transformers import XLMRobertaConfig, XLMRobertaModel

    config = XLMRobertaConfig(
        vocab_size=250002,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        hidden_act="gelu",
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        max_position_embeddings=514,
        type_vocab_size=1,
        initializer_range=0.02,
        layer_norm_eps=1e-5,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        architectures=["XLMRobertaModel"],
        dtype="float32",
    )
    model = XLMRobertaModel(config, add_pooling_layer=False).eval()
    write_st_folder(out, model, 768, 512, [], {"query": "query: ", "document": "passage: "}, tok_dir)
    return out


def make_qwen3(out: Path, tok_dir: Path) -> Path:
    import torch
    from transformers import Qwen3Config, Qwen3Model

    config = Qwen3Config(
        vocab_size=151669,
        hidden_size=1024,
        intermediate_size=3072,
        num_hidden_layers=28,
        num_attention_heads=16,
        num_key_value_heads=8,
        head_dim=128,
        hidden_act="silu",
        max_position_embeddings=32768,
        initializer_range=0.02,
        rms_norm_eps=1e-6,
        use_cache=False,
        tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
        attention_bias=False,
        attention_dropout=0.0,
        use_sliding_window=False,
        architectures=["Qwen3Model"],
        dtype="float32",
    )
    with torch.device("cpu"):
        model = Qwen3Model(config).eval()
    prompts = {
        "query": "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery:",
        "document": "",
    }
    write_st_folder(out, model, 1024, 512, [], prompts, tok_dir, last_token=True, padding_side="left")
    return out


def make_gemma(out: Path, tok_dir: Path) -> Path:
    import torch
    from transformers import Gemma3TextConfig, Gemma3TextModel

    layers = 24
    config = Gemma3TextConfig(
        vocab_size=262144,
        hidden_size=768,
        intermediate_size=1152,
        num_hidden_layers=layers,
        num_attention_heads=3,
        num_key_value_heads=1,
        head_dim=256,
        hidden_activation="gelu_pytorch_tanh",
        max_position_embeddings=2048,
        initializer_range=0.02,
        rms_norm_eps=1e-6,
        use_cache=False,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
        rope_parameters={
            "full_attention": {"rope_type": "default", "rope_theta": 1_000_000.0},
            "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
        },
        attention_bias=False,
        attention_dropout=0.0,
        query_pre_attn_scalar=256,
        sliding_window=512,
        layer_types=["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(layers)],
        final_logit_softcapping=None,
        attn_logit_softcapping=None,
        use_bidirectional_attention=True,
        architectures=["Gemma3TextModel"],
        dtype="float32",
    )
    with torch.device("cpu"):
        model = Gemma3TextModel(config).eval()
    prompts = {"query": "task: search result | query: ", "document": "title: none | text: "}
    write_st_folder(out, model, 768, 2048, [(768, 3072), (3072, 768)], prompts, tok_dir)
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--out",
        required=True,
        help="parent folder; writes minilm-random/, embeddinggemma-random/, xlmr-base-random/, qwen3-0.6b-random/ or bert-base-random/",
    )
    p.add_argument("--which", default="both", choices=["minilm", "gemma", "both", "xlmr", "qwen3", "bert-base"])
    p.add_argument("--tokenizer-dir", default=str(ROOT / "models" / "all-MiniLM-L6-v2"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--check", action="store_true", help="load each folder with SentenceTransformer and encode 2 texts")
    args = p.parse_args(argv)

    import torch

    torch.manual_seed(args.seed)
    out, tok = Path(args.out), Path(args.tokenizer_dir)
    made = []
    if args.which in ("minilm", "both"):
        made.append(make_minilm(out / "minilm-random", tok))
    if args.which in ("gemma", "both"):
        made.append(make_gemma(out / "embeddinggemma-random", tok))
    if args.which == "xlmr":
        made.append(make_xlmr(out / "xlmr-base-random", tok))
    if args.which == "qwen3":
        made.append(make_qwen3(out / "qwen3-0.6b-random", tok))
    if args.which == "bert-base":
        made.append(make_minilm(out / "bert-base-random", tok, hidden=768, layers=12))
    for d in made:
        size = sum(f.stat().st_size for f in d.rglob("*") if f.is_file())
        print(f"{d}: {size / 2**20:.1f} MiB")
        if args.check:
            from sentence_transformers import SentenceTransformer

            m = SentenceTransformer(str(d), device="cpu", local_files_only=True)
            emb = m.encode(["a first text", "and a second, longer text to encode"], convert_to_tensor=True)
            print(f"  loaded: {[type(x).__name__ for x in m]}; embeddings {tuple(emb.shape)}, norms {emb.norm(dim=1).tolist()}")


if __name__ == "__main__":
    main()
