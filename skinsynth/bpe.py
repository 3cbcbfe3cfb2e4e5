"""A CLIP BPE tokenizer written offline from a word list, so that random-weight pipelines (the tiny test pipeline,
`finetune --method scratch`) need no download and spell each caption word as one token."""

from __future__ import annotations

import json
from pathlib import Path


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable-character table."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = printable[:], 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars)))


def _bpe_merges(words: list[str]) -> list[tuple[str, str]]:
    """Byte-pair merges learned on `words` (each counted once, CLIP's `</w>` word ending): the most frequent pair
    first, ties broken alphabetically (deterministic, unlike a hash-ordered trainer), until every word is one symbol."""
    from collections import Counter

    corpus = [list(word[:-1]) + [word[-1] + "</w>"] for word in dict.fromkeys(words) if word]
    merges = []
    while pairs := Counter(pair for symbols in corpus for pair in zip(symbols, symbols[1:])):
        best = min(pairs, key=lambda pair: (-pairs[pair], pair))
        merges.append(best)
        for k, symbols in enumerate(corpus):
            merged, i = [], 0
            while i < len(symbols):
                if tuple(symbols[i : i + 2]) == best:
                    merged.append(best[0] + best[1])
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            corpus[k] = merged
    return merges


def _ordered_merges(words: list[str]) -> list[tuple[str, str]]:
    """Merges that build each word left to right, in word order: the tiny pipeline's vocabulary (its token ids are
    what tests' random-weight models were built around). Words sharing a pair may not come out whole."""
    merges: list[tuple[str, str]] = []
    for word in words:
        symbols = list(word[:-1]) + [word[-1] + "</w>"]
        token = symbols[0]
        for symbol in symbols[1:]:
            if (token, symbol) not in merges:
                merges.append((token, symbol))
            token += symbol
    return merges


def write_tokenizer(folder: Path, words: list[str], max_length: int = 77, *, learned: bool = True) -> None:
    """A CLIP BPE tokenizer built without any download whose merges spell `words` (lower-case): learned on them
    (`learned`, each word then one token) or in word order (the tiny pipeline's). Any other text still tokenizes,
    byte by byte."""
    from transformers import CLIPTokenizer

    byte_chars = list(_bytes_to_unicode().values())
    merges = _bpe_merges(words) if learned else _ordered_merges(words)
    vocab = byte_chars + [c + "</w>" for c in byte_chars] + [a + b for a, b in merges] + ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(dict.fromkeys(vocab))}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=max_length)
    tokenizer.save_pretrained(folder)
