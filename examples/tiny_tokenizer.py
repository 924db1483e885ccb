"""A small CLIP-style byte-level BPE tokenizer, built from explicit tables (no training, no download).

It has CLIP's structure exactly — NFC + whitespace folding + lowercase, CLIP's split regex, byte-level
alphabet with ``</w>`` word-final tokens, ``<|startoftext|>``/``<|endoftext|>`` around every text —
with a vocabulary of 512 byte tokens, a few hundred merges learned from a fixed word list, and the
two specials. Both transformers' ``CLIPTokenizer`` and the ``tokenizers`` library load it.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
CLIP_SPLIT = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
WORDS = (
    "a photo of an astronaut riding a horse on the moon painting portrait landscape castle "
    "anime girl with blue hair city at night cyberpunk street dog cat sitting in the garden "
    "oil canvas watercolor sunset over mountains highly detailed sharp focus trending art "
    "beautiful forest river lake red green yellow white black dragon flying sky clouds"
).split()


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte → printable character table."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def _merges(num_merges: int) -> list[tuple[str, str]]:
    """Greedy BPE merges over WORDS (deterministic: ties broken by the pair itself)."""
    byte_char = bytes_to_unicode()
    words = Counter(WORDS)
    splits = {w: [byte_char[b] for b in w.encode()] for w in words}
    for w in splits:
        splits[w][-1] += "</w>"
    merges: list[tuple[str, str]] = []
    for _ in range(num_merges):
        pairs: Counter = Counter()
        for w, parts in splits.items():
            for a, b in zip(parts, parts[1:]):
                pairs[(a, b)] += words[w]
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        for w, parts in splits.items():
            out, i = [], 0
            while i < len(parts):
                if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
                    out.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    out.append(parts[i])
                    i += 1
            splits[w] = out
    return merges


def vocab_and_merges(num_merges: int = 200) -> tuple[dict[str, int], list[tuple[str, str]]]:
    chars = list(bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars]
    merges = _merges(num_merges)
    tokens += ["".join(m) for m in merges]
    tokens += [BOS, EOS]
    return {t: i for i, t in enumerate(dict.fromkeys(tokens))}, merges


def make_tokenizer(num_merges: int = 200) -> Tokenizer:
    vocab, merges = vocab_and_merges(num_merges)
    tok = Tokenizer(
        models.BPE(
            vocab=vocab, merges=merges, end_of_word_suffix="</w>", unk_token=EOS, fuse_unk=False
        )
    )
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(CLIP_SPLIT), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.RobertaProcessing(
        (EOS, vocab[EOS]), (BOS, vocab[BOS]), add_prefix_space=False, trim_offsets=False
    )
    tok.add_special_tokens([BOS, EOS])
    return tok


def save(folder: Path, num_merges: int = 200) -> Path:
    """Write the tokenizer in the diffusers ``tokenizer/`` layout (tokenizer.json + CLIP files)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = vocab_and_merges(num_merges)
    make_tokenizer(num_merges).save(str(folder / "tokenizer.json"))
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False, sort_keys=True))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": 77,
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": EOS,
        "pad_token": EOS,
        "do_lower_case": True,
        "errors": "replace",
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": True,
    }
    (folder / "tokenizer_config.json").write_text(
        json.dumps(config, indent=2, sort_keys=True) + "\n"
    )
    (folder / "special_tokens_map.json").write_text(
        json.dumps(
            {"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": EOS},
            indent=2,
            sort_keys=True,
        )
        + "\n"
    )
    return folder
