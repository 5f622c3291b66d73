#!/usr/bin/python3
"""CLIP's byte-level BPE tokenizer in Python, written from the algorithm's description (transformers'
CLIPTokenizer without ftfy): the reference tests/test_tokenizer.c checks the C tokenizer against.

  clip_bpe_ref.py learn CORPUS DIR [--merges N] [--pad TOKEN] [--context N]
      learn N merges from CORPUS (UTF-8 text, one caption per line) by pair frequency, and write DIR as
      transformers writes a CLIPTokenizer: vocab.json, merges.txt, tokenizer_config.json,
      special_tokens_map.json
  clip_bpe_ref.py encode DIR STRINGS OUT
      STRINGS: one text per line as the hex of its bytes. OUT: per text, "ERROR" when its bytes are not
      UTF-8, "NEWER" when it holds characters newer than Python's Unicode tables, else "ids... | length
      dropped" (the padded ids, the tokens before padding, the tokens cut off)

Uses Python's unicodedata and the `regex` module (Debian's python3-regex) for the Unicode classes, so it
shares no Unicode tables with the C code (utf8proc).
"""
import json
import os
import sys
import unicodedata

import regex

PATTERN = regex.compile(r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+",
                        regex.IGNORECASE)
SOT, EOT = "<|startoftext|>", "<|endoftext|>"


def byte_symbols():
    """GPT-2's reversible map from bytes to printable characters, in CLIP's vocabulary order."""
    keep = [b for b in range(256) if 33 <= b <= 126 or 161 <= b <= 172 or 174 <= b <= 255]
    table, extra = {b: chr(b) for b in keep}, 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    order = keep + [b for b in range(256) if b not in keep]
    return table, [table[b] for b in order]


BYTE, BYTE_ORDER = byte_symbols()


def is_cjk(c):
    o = ord(c)
    return any(lo <= o <= hi for lo, hi in ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
                                           (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F)))


def clean(text):
    """transformers' BasicTokenizer(strip_accents=False, do_split_on_punc=False), joined by spaces."""
    out = []
    for c in text:
        if c in "\t\n\r " or unicodedata.category(c) == "Zs":
            out.append(" ")
        elif c == "\0" or c == "\ufffd" or unicodedata.category(c).startswith("C"):
            continue
        elif is_cjk(c):
            out.append(" " + c + " ")
        else:
            out.append(c)
    words = unicodedata.normalize("NFC", "".join(out)).split()
    return " ".join(w.lower() for w in words)


def pretokens(text):
    return PATTERN.findall(text)


UNASSIGNED = regex.compile(r"\p{Cn}")


def newer_unicode(text):
    """Whether the text holds a character unassigned in unicodedata's Unicode version but assigned in a later
    one (which the regex module's tables know): the two Unicode versions would tokenize it differently."""
    return any(unicodedata.category(c) == "Cn" and not UNASSIGNED.match(c) for c in text)


def byte_word(token):
    return [BYTE[b] for b in token.encode("utf-8")]


def apply_merges(symbols, ranks):
    """Merge the best-ranked adjacent pair everywhere, left to right, until none is a merge."""
    word = symbols[:-1] + [symbols[-1] + "</w>"]
    while len(word) > 1:
        pairs = {(word[i], word[i + 1]) for i in range(len(word) - 1)}
        best = min(pairs, key=lambda p: ranks.get(p, float("inf")))
        if best not in ranks:
            break
        merged, i = [], 0
        while i < len(word):
            if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                merged.append(word[i] + word[i + 1])
                i += 2
            else:
                merged.append(word[i])
                i += 1
        word = merged
    return word


def learn(corpus_path, out_dir, n_merges, pad, context):
    with open(corpus_path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    freq = {}
    for line in lines:
        for tok in pretokens(clean(line)):
            if tok in (SOT, EOT):
                continue
            w = byte_word(tok)
            key = tuple(w[:-1] + [w[-1] + "</w>"])
            freq[key] = freq.get(key, 0) + 1
    merges = []
    words = dict(freq)
    for _ in range(n_merges):
        counts = {}
        for w, n in words.items():
            for i in range(len(w) - 1):
                counts[(w[i], w[i + 1])] = counts.get((w[i], w[i + 1]), 0) + n
        if not counts:
            break
        best = max(sorted(counts), key=lambda p: counts[p])   # most frequent; ties to the smallest pair
        merges.append(best)
        new = {}
        for w, n in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(w[i] + w[i + 1])
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            new[tuple(out)] = new.get(tuple(out), 0) + n
        words = new
    vocab = BYTE_ORDER + [s + "</w>" for s in BYTE_ORDER] + ["".join(m) for m in merges] + [SOT, EOT]
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump({t: i for i, t in enumerate(dict.fromkeys(vocab))}, f, ensure_ascii=False)
    with open(os.path.join(out_dir, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "".join(a + " " + b + "\n" for a, b in merges))
    specials = {"bos_token": SOT, "eos_token": EOT, "unk_token": EOT, "pad_token": pad}
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(dict(specials, model_max_length=context, tokenizer_class="CLIPTokenizer",
                       do_lower_case=True, errors="replace"), f, indent=2)
    with open(os.path.join(out_dir, "special_tokens_map.json"), "w", encoding="utf-8") as f:
        json.dump({k: {"content": v, "lstrip": False, "rstrip": False, "normalized": True, "single_word": False}
                   for k, v in specials.items()}, f, indent=2)


class Tokenizer:
    def __init__(self, folder):
        with open(os.path.join(folder, "vocab.json"), encoding="utf-8") as f:
            self.vocab = json.load(f)
        with open(os.path.join(folder, "merges.txt"), encoding="utf-8") as f:
            lines = f.read().strip().split("\n")[1:49152 - 256 - 2 + 1]
        self.ranks = {tuple(l.split()): i for i, l in enumerate(lines)}
        with open(os.path.join(folder, "tokenizer_config.json"), encoding="utf-8") as f:
            cfg = json.load(f)
        self.context = cfg.get("model_max_length", 77)
        self.special = {k: cfg[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token")}

    def piece_ids(self, text):
        ids = []
        for tok in pretokens(clean(text)):
            if tok in (SOT, EOT):   # whole, as a cache of the two would give them
                syms = [tok]
            else:
                syms = apply_merges(byte_word(tok), self.ranks)
            ids += [self.vocab.get(s, self.vocab[self.special["unk_token"]]) for s in syms]
        return ids

    def encode(self, text):
        # the special tokens' exact text first: at each place the longest that starts there
        specials = sorted(set(self.special.values()), key=len, reverse=True)
        ids, start, i = [], 0, 0
        while i < len(text):
            hit = next((s for s in specials if text.startswith(s, i)), None)
            if hit is None:
                i += 1
                continue
            ids += self.piece_ids(text[start:i]) + [self.vocab[hit]]
            i += len(hit)
            start = i
        ids += self.piece_ids(text[start:])
        keep = ids[:self.context - 2]
        row = [self.vocab[self.special["bos_token"]]] + keep + [self.vocab[self.special["eos_token"]]]
        length = len(row)
        row += [self.vocab[self.special["pad_token"]]] * (self.context - len(row))
        return row, length, len(ids) - len(keep)


def main():
    a = sys.argv[1:]
    if a and a[0] == "learn" and len(a) >= 3:
        opts = dict(zip(a[3::2], a[4::2]))
        learn(a[1], a[2], int(opts.get("--merges", 300)), opts.get("--pad", EOT), int(opts.get("--context", 77)))
    elif a and a[0] == "encode" and len(a) == 4:
        tok = Tokenizer(a[1])
        with open(a[2]) as f, open(a[3], "w") as out:
            for line in f.read().splitlines():
                try:
                    text = bytes.fromhex(line).decode("utf-8")
                except UnicodeDecodeError:
                    out.write("ERROR\n")
                    continue
                if newer_unicode(text):
                    out.write("NEWER\n")
                    continue
                row, length, dropped = tok.encode(text)
                out.write(" ".join(map(str, row)) + " | %d %d\n" % (length, dropped))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
