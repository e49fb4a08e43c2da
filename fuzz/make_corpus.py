#!/usr/bin/env python3
"""Writes the seed corpus of the fuzz targets (fuzz/corpus/<target>/) from small inputs
and the repository's tiny-model fixtures. Each file starts with the selector byte the
target reads first (core/src/fuzzing.rs). Seeds are starting points for mutation, not
expected results. Run from the repository root: python3 fuzz/make_corpus.py"""
import json
import os
import struct

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fuzz", "corpus")
ENCODINGS = [None, "utf-8", "cp949", "euc-kr", "utf-16le", "utf-16be", "cp1252",
             "shift_jis", "utf-8-sig", "gbk", "latin1", "no-such-encoding"]
BACKBONES = ["bert", "gemma3_text", "qwen3", "modernbert", "roberta", "xlm-roberta"]


def put(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def table_selector(encoding, fmt):
    """fmt: 0 by extension, 1 CSV, 2 JSON Lines."""
    return bytes([ENCODINGS.index(encoding) + len(ENCODINGS) * fmt])


korean = "설명,분류,도메인\n보통예금 계좌,예금,은행\n\"자동차 보험, 종합\",보험,보험\n\"여러 줄\n설명\",\"따옴표 \"\"안\"\"\",은행\n"
put("table", "utf8_csv", table_selector(None, 0) + korean.encode())
put("table", "utf8_bom_csv", table_selector("utf-8-sig", 1) + b"\xef\xbb\xbf" + korean.encode())
put("table", "cp949_csv", table_selector("cp949", 1) + korean.encode("cp949"))
put("table", "utf16le_bom_csv", table_selector("utf-16le", 1) + b"\xff\xfe" + korean.encode("utf-16-le"))
put("table", "utf16be_csv", table_selector("utf-16be", 1) + korean.encode("utf-16-be"))
put("table", "crlf_dup_headers", table_selector(None, 1) + b"a,a,b\r\n1,2,3\r\n\r\n4,\"5\r\n6\",7\r\n")
put("table", "shift_jis", table_selector("shift_jis", 1) + "名前,値\n東京,1\n".encode("shift_jis"))
jsonl = '{"anchor": "질문", "positive": "답변", "label": 1.0}\n{"anchor": "q2", "positive": "a2", "label": 0.5}\n'
put("table", "jsonl", table_selector(None, 2) + jsonl.encode())
put("table", "jsonl_nested", table_selector(None, 2) + b'{"a": [1, {"b": null}], "c": "x"}\n{"a": 2}\n')

put("csv_two_halves", "quoted_newlines", b"\x05" + b'h1,h2\n"a\nb",c\nd,"e,""f"""\n"g\r\nh",i\r\nj,k\n')
put("csv_two_halves", "many_rows", b"\x01" + ("x,y\n" + "".join(f"{i},\"v{i}\nw\"\n" for i in range(20))).encode())
put("csv_two_halves", "korean", b"\x09" + korean.encode())

train_csv = ("anchor,positive,negative,label\n질문 하나,답 하나,다른 답,1\nq2,a2,n2,0.5\n")
put("training_data", "triplets_label_csv", b"\x00" + train_csv.encode())
put("training_data", "pairs_csv", b"\x02" + b"anchor,positive\nq,a\nq2,a2\n")
put("training_data", "scores_jsonl", b"\x09" + (
    '{"query": "q", "positive": "p", "negative_1": "n", "scores": [0.9, 0.1]}\n'
    '{"query": "q2", "positive": "p2", "negative_1": "n2", "scores": "[0.8, 0.3]"}\n').encode())
put("training_data", "margins_csv", b"\x0a" + b"a,p,n,label\nx,y,z,0.25\n")
put("training_data", "single_text_csv", b"\x00" + b"text\none\ntwo\n")


def safetensors(tensors, metadata=None):
    header, data = {}, b""
    if metadata:
        header["__metadata__"] = metadata
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + data


put("safetensors", "f32_i64", safetensors({
    "a": ("F32", [2, 2], struct.pack("<4f", 1, 2, 3, 4)),
    "b": ("I64", [1], struct.pack("<q", 7)),
}, {"format": "pt"}))
put("safetensors", "bf16_f16", safetensors({
    "w": ("BF16", [3], b"\x80\x3f\x00\x40\x40\x40"),
    "h": ("F16", [1, 1], b"\x00\x3c"),
}))
put("safetensors", "empty_shape", safetensors({"s": ("F32", [], struct.pack("<f", 1.5))}))
put("safetensors", "zero_size", safetensors({"z": ("F32", [0, 4], b"")}))

fixtures = os.path.join(ROOT, "tests", "fixtures", "encoder")
for folder in sorted(os.listdir(fixtures)):
    cfg = os.path.join(fixtures, folder, "config.json")
    if not os.path.isfile(cfg):
        continue
    with open(cfg, "rb") as f:
        raw = f.read()
    model_type = json.loads(raw)["model_type"]
    put("model_config", f"config_{folder}", bytes([BACKBONES.index(model_type)]) + raw)
    for name, sel in (("modules.json", len(BACKBONES)), ("tokenizer_config.json", len(BACKBONES) + 1),
                      ("1_Pooling/config.json", len(BACKBONES) + 2)):
        p = os.path.join(fixtures, folder, name)
        if os.path.isfile(p) and os.path.getsize(p) < 64 << 10:
            with open(p, "rb") as f:
                put("model_config", f"{name.replace('/', '_')}_{folder}", bytes([sel]) + f.read())
put("model_config", "bert_minimal", b"\x00" + json.dumps({
    "model_type": "bert", "vocab_size": 10, "hidden_size": 4, "num_hidden_layers": 1,
    "num_attention_heads": 2, "intermediate_size": 8, "max_position_embeddings": 8,
    "type_vocab_size": 1, "hidden_act": "gelu", "layer_norm_eps": 1e-12}).encode())
put("model_config", "padding_left", bytes([len(BACKBONES) + 1]) + b'{"padding_side": "left", "pad_token": {"content": "<pad>"}}')

for name, text in {
    "mnrl": "scale=20\nsimilarity_fct=cos_sim",
    "cached": "mini_batch_size=32\nmini_batch_num_tokens=4096\nscale=20.0",
    "matryoshka": "dims=[768,512,256,128,64]\nweights=[1,1,1,1,1]\ninner=mnrl",
    "gist": "guide=models/all-MiniLM-L6-v2\nmargin_strategy=absolute\nmargin=0.1\ntemperature=0.01",
    "hardness": "hardness_mode=in_batch_negatives\nhardness_strength=5\npartition_mode=joint",
    "sampler": "scope=group\nk=5\nseed=7\ndevice=cpu\nbatch_size=16",
    "strange": "=\nkey=\n=value\na=b=c\nnested={\"x\": [1, 2]}\nscale=-1e400",
}.items():
    put("plugin_options", name, text.encode())
