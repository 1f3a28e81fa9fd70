#!/usr/bin/env python3
"""Generate the reference fixtures for llmkit's tokenizer and chat tests.

Every expected value in data/fixtures/tokenizer/ comes from this script and
from implementations that share no code with libcore/tokenizer.c:

  gpt2.json     GPT-2 byte-level BPE ids from the Hugging Face `tokenizers`
                package: ByteLevelBPETokenizer(encoder.json, vocab.bpe), no
                special-token processing; plus ids with <|endoftext|>
                registered as a special token (parse_special on), plus the
                same vocabulary behind the Llama 3 and Qwen2 pre-tokenizers
                (tokenizers.models.BPE + pre_tokenizers.Split(Regex(...),
                "isolated") + ByteLevel(use_regex=False)).
  pretok.json   pre-tokenizer splits (byte offsets) of the same texts from
                `tokenizers` pre-tokenizers: gpt2 = ByteLevel(use_regex=True),
                llama3 / qwen2 = Split(Regex(pattern), behavior="isolated"),
                smollm = Sequence([Digits(individual_digits=True),
                ByteLevel(use_regex=True)]) -- the patterns are those of the
                models' tokenizer.json files.
  spm.json      stories260K (SentencePiece BPE, 512 pieces) ids from two
                references written here: (1) a priority-queue score-greedy
                merge over the pieces, scores and types read from the GGUF
                with the `gguf` package, following llama.cpp's SPM rules
                (space prefix, U+2581, byte fallback, a space prefix again
                after each special token); (2) a port of llama2.c's run.c
                encode(), which rescans all pairs on every merge and reads
                its vocabulary from llama2.c's own tok512.bin.  The script
                stops if the two disagree on any text.
  corpus.json   token count and FNV-1a-64 hash of the id stream for whole
                corpora (tinyshakespeare with GPT-2 and with Llama 3
                pre-tokenization; tinystories-val with stories260K).
  chat.json     chat templates (from the models' tokenizer_config.json on
                the Hugging Face hub) rendered with jinja2 the way
                transformers' apply_chat_template does (trim_blocks,
                lstrip_blocks), for several conversations.

Usage:  scripts/gen-tokenizer-fixtures.py [DATA_DIR [OUT_DIR]]
        DATA_DIR defaults to ../shared/data beside the source tree,
        OUT_DIR to data/fixtures/tokenizer.
Needs:  pip install tokenizers gguf jinja2  (tested with tokenizers 0.23.3,
        gguf 0.19.0, Jinja2 3.1.6).
"""

import hashlib
import heapq
import json
import os
import struct
import sys

import gguf
import jinja2
import jinja2.sandbox
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from tokenizers.implementations import ByteLevelBPETokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(HERE)
DATA = sys.argv[1] if len(sys.argv) > 1 else os.path.join(SRC, "..", "shared", "data")
OUT = sys.argv[2] if len(sys.argv) > 2 else os.path.join(SRC, "data", "fixtures", "tokenizer")

GPT2_DIR = os.path.join(DATA, "tokenizers", "gpt2")
STORIES = os.path.join(DATA, "models", "stories260K.gguf")
TOK512 = os.path.join(DATA, "models", "tok512.bin")

# Pre-tokenizer patterns, as in the models' tokenizer.json.
PAT_GPT2 = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
PAT_LLAMA3 = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
PAT_QWEN2 = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""

# ---------------------------------------------------------------- texts

TEXTS = [
    "",
    " ",
    "a",
    "Hello world",
    "Hello, world!",
    "Once upon a time, there was a little girl named Lily.",
    " leading space",
    "   three leading spaces",
    "trailing space ",
    "trailing spaces   ",
    "a  b   c    d     e",
    "I'm sure you're right, they'll say we've done what he'd've wanted; it's John's.",
    "DON'T SHOUT, I'M HERE. IT'S FINE, WE'VE GOT IT",
    "quotes 'single' \"double\" `back` ''' \"\"\"",
    "x'S y'T z'Re 'll 'LL",
    "Numbers: 0 7 42 123 1234 12345 1234567890 3.14159 -2.5e10 1,000,000",
    "Dates 2024-01-31 and times 12:34:56, phone +1 (555) 010-9999",
    "line one\nline two\n\nline four\n\n\n",
    "\n\n\nleading newlines",
    "tabs\tand\t\tmore\ttabs\t",
    "windows\r\nline\r\nends\r\n",
    "mixed \t\n \n\t  whitespace  \n",
    "  \n  \n  ",
    "\t",
    "\n",
    "café naïve résumé Zürich Ångström façade",
    "e\u0301 combining acute, a\u0308 umlaut",
    "你好，世界。这是一个测试。",
    "日本語のテキストとカタカナ、ひらがな。",
    "안녕하세요 세계",
    "Привет, мир! Съешь же ещё этих мягких французских булок.",
    "Γειά σου Κόσμε",
    "مرحبا بالعالم",
    "שלום עולם",
    "हिन्दी पाठ",
    "ภาษาไทย",
    "emoji 😀😃😄 👍🏽 ❤️ 🇺🇸 family 👨\u200d👩\u200d👧\u200d👦",
    "math ∑ x² ≤ ∞, ∫ f(x) dx ≈ 3½ ⅞ ①②③ Ⅻ",
    "unicode spaces:\u00a0nbsp\u2003em\u3000ideographic\u2009thin\u202fnarrow",
    "zero width\u200bspace\u200djoiner\ufeffbom",
    "control \x01\x02\x1b[0m\x7f chars",
    "seps \x1c\x1d\x1e\x1f\x85 end",
    "ſ long s 'ſ and K kelvin",
    "def f(x):\n    return x ** 2  # square\n\nprint(f(3))\n",
    "int main(void) {\n\tprintf(\"%d\\n\", 42);\n\treturn 0;\n}\n",
    "for (i = 0; i < n; i++) { a[i] += b[i] * 2; }",
    "{\"key\": [1, 2, 3], \"nested\": {\"a\": null, \"b\": true}}",
    "https://example.com/path?q=1&r=2#frag user@example.org",
    "<|endoftext|> is not special here <|im_start|>",
    "<s>[INST] <<SYS>>\nsystem\n<</SYS>>\n\nhi [/INST]",
    "!!!??? ... --- ___ *** ### $$$ %%% ^^^ ~~~ |||",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "ababababababababababababababab",
    "The quick brown fox jumps over the lazy dog. THE QUICK BROWN FOX.",
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n",
    "nul\x00byte",
    "1+1=2 2*3=6 10/2=5 a==b a!=b a<=b a>=b a&&b a||b",
    "MixedCASE camelCase snake_case kebab-case SCREAMING_CASE",
    "x" * 3 + " " * 7 + "y",
    "end with newline\n",
]

# Invalid UTF-8 cannot go through `tokenizers` (it takes str); the C tests
# round-trip random bytes instead.


def fnv1a64(ids):
    h = 0xcbf29ce484222325
    for i in ids:
        for b in struct.pack("<i", i):
            h ^= b
            h = (h * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return "%016x" % h


def char_to_byte_offsets(text):
    offs = [0]
    for ch in text:
        offs.append(offs[-1] + len(ch.encode("utf-8")))
    return offs


def splits(pre, text):
    """Byte offsets [b0, b1, ..., bn] of the pieces of text."""
    c2b = char_to_byte_offsets(text)
    pieces = pre.pre_tokenize_str(text)
    out = [0]
    for _, (s, e) in pieces:
        assert c2b[s] == out[-1], (text, pieces)
        out.append(c2b[e])
    assert out[-1] == len(text.encode("utf-8")), (text, pieces)
    return out


# ---------------------------------------------------------------- GPT-2


def gpt2_fixtures():
    enc = os.path.join(GPT2_DIR, "encoder.json")
    bpe = os.path.join(GPT2_DIR, "vocab.bpe")
    plain = ByteLevelBPETokenizer(enc, bpe)
    special = ByteLevelBPETokenizer(enc, bpe)
    special.add_special_tokens(["<|endoftext|>"])

    def bpe_with(pattern, ignore_merges):
        vocab, merges = models.BPE.read_file(enc, bpe)
        t = Tokenizer(models.BPE(vocab, merges, ignore_merges=ignore_merges))
        t.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
        t.decoder = decoders.ByteLevel()
        return t

    llama3 = bpe_with(PAT_LLAMA3, True)   # Llama 3's tokenizer.json: ignore_merges
    qwen2 = bpe_with(PAT_QWEN2, False)

    special_texts = [
        "Hello world <|endoftext|> it's",
        "<|endoftext|>",
        "<|endoftext|><|endoftext|>x<|endoftext|>",
        "a<|endoftext|",
    ]
    cases = []
    for t in TEXTS + special_texts:
        c = {"text": t,
             "ids": plain.encode(t).ids,
             "ids_special": special.encode(t).ids,
             "ids_llama3": llama3.encode(t).ids,
             "ids_qwen2": qwen2.encode(t).ids}
        cases.append(c)
    return {"source": "tokenizers %s ByteLevelBPETokenizer(encoder.json, vocab.bpe)" %
            __import__("tokenizers").__version__, "cases": cases}


def pretok_fixtures():
    pres = {
        "gpt2": pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        "llama3": pre_tokenizers.Split(Regex(PAT_LLAMA3), behavior="isolated"),
        "qwen2": pre_tokenizers.Split(Regex(PAT_QWEN2), behavior="isolated"),
        "smollm": pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]),
    }
    cases = []
    for t in TEXTS:
        c = {"text": t}
        for name, p in pres.items():
            c[name] = splits(p, t)
        cases.append(c)
    return {"patterns": {"gpt2": PAT_GPT2, "llama3": PAT_LLAMA3, "qwen2": PAT_QWEN2},
            "cases": cases}


# ---------------------------------------------------------------- SPM


class SpmReference:
    """Score-greedy BPE over SentencePiece pieces, llama.cpp's SPM rules."""

    def __init__(self, path):
        r = gguf.GGUFReader(path)
        f = r.fields
        self.tokens = f["tokenizer.ggml.tokens"].contents()
        self.scores = f["tokenizer.ggml.scores"].contents()
        self.types = f["tokenizer.ggml.token_type"].contents()
        self.bos = f["tokenizer.ggml.bos_token_id"].contents()
        self.unk = f["tokenizer.ggml.unknown_token_id"].contents()
        self.piece = {}
        for i, (t, ty) in enumerate(zip(self.tokens, self.types)):
            # Only normal and user-defined pieces take part in merges.
            if ty in (1, 4):
                self.piece.setdefault(t.encode("utf-8"), i)
        self.byte = {}
        for i, t in enumerate(self.tokens):
            if self.types[i] == 6:
                self.byte[int(t[3:5], 16)] = i
        self.special = sorted(
            [(t, i) for i, t in enumerate(self.tokens) if self.types[i] in (3, 4) and t],
            key=lambda x: -len(x[0].encode()))

    def _encode_fragment(self, text):
        data = text.replace(" ", "\u2581").encode("utf-8")
        # one symbol per UTF-8 character
        syms = []
        i = 0
        s = data.decode("utf-8")
        for ch in s:
            n = len(ch.encode("utf-8"))
            syms.append([i, n])
            i += n
        prev = list(range(-1, len(syms) - 1))
        nxt = list(range(1, len(syms) + 1))
        nxt[-1:] = [-1] if syms else []
        heap = []

        def add(l, r):
            if l < 0 or r < 0:
                return
            piece = data[syms[l][0]:syms[r][0] + syms[r][1]]
            tid = self.piece.get(piece)
            if tid is None:
                return
            heapq.heappush(heap, (-self.scores[tid], l, r, len(piece)))

        for k in range(len(syms) - 1):
            add(k, k + 1)
        while heap:
            _, l, r, n = heapq.heappop(heap)
            if syms[l][1] == 0 or syms[r][1] == 0 or syms[l][1] + syms[r][1] != n:
                continue
            syms[l][1] += syms[r][1]
            syms[r][1] = 0
            nxt[l] = nxt[r]
            if nxt[r] >= 0:
                prev[nxt[r]] = l
            add(prev[l], l)
            add(l, nxt[l])
        out = []
        k = 0 if syms else -1
        while k >= 0:
            piece = data[syms[k][0]:syms[k][0] + syms[k][1]]
            tid = self.piece.get(piece)
            if tid is not None:
                out.append(tid)
            else:
                out.extend(self.byte[b] for b in piece)
            k = nxt[k]
        return out

    def encode(self, text, add_bos=True, parse_special=False):
        out = [self.bos] if add_bos else []
        frags = []
        if parse_special:
            i = 0
            start = 0
            while i < len(text):
                for tok, tid in self.special:
                    if text.startswith(tok, i):
                        if i > start:
                            frags.append(text[start:i])
                        frags.append(tid)
                        i += len(tok)
                        start = i
                        break
                else:
                    i += 1
            if start < len(text):
                frags.append(text[start:])
        elif text:
            frags = [text]
        prev_special = True
        for f in frags:
            if isinstance(f, int):
                out.append(f)
                prev_special = True
            else:
                out.extend(self._encode_fragment((" " if prev_special else "") + f))
                prev_special = False
        return out


class Llama2cEncoder:
    """A port of llama2.c's run.c encode(), reading tok512.bin."""

    def __init__(self, path):
        b = open(path, "rb").read()
        off = 4
        self.vocab = []
        self.scores = []
        while off < len(b):
            s, n = struct.unpack_from("<fi", b, off)
            off += 8
            self.vocab.append(b[off:off + n])
            self.scores.append(s)
            off += n
        self.lookup = {}
        for i, v in enumerate(self.vocab):
            self.lookup.setdefault(v, i)

    def encode(self, text, bos=True):
        data = text.encode("utf-8")
        tokens = [1] if bos else []
        if data:
            tokens.append(self.lookup[b" "])
        i = 0
        while i < len(data):
            j = i + 1
            while j < len(data) and (data[j] & 0xC0) == 0x80 and j - i < 4:
                j += 1
            tid = self.lookup.get(data[i:j])
            if tid is not None:
                tokens.append(tid)
            else:
                tokens.extend(b + 3 for b in data[i:j])
            i = j
        while True:
            best, best_id, best_idx = -1e10, -1, -1
            for k in range(len(tokens) - 1):
                tid = self.lookup.get(self.vocab[tokens[k]] + self.vocab[tokens[k + 1]])
                if tid is not None and self.scores[tid] > best:
                    best, best_id, best_idx = self.scores[tid], tid, k
            if best_idx < 0:
                break
            tokens[best_idx:best_idx + 2] = [best_id]
        return tokens


def spm_fixtures():
    ref = SpmReference(STORIES)
    l2c = Llama2cEncoder(TOK512)
    cases = []
    for t in TEXTS:
        ids = ref.encode(t, add_bos=True)
        if "\u2581" not in t:
            other = l2c.encode(t, bos=True)
            if ids != other:
                sys.exit("SPM references disagree on %r:\n %s\n %s" % (t, ids, other))
        cases.append({"text": t, "ids": ids,
                      "ids_nobos": ref.encode(t, add_bos=False)})
    special = []
    for t in ["Hello<s>world", "<s>Once upon a time</s>", "a </s> b<unk>c",
              "<s><s>", "no special"]:
        special.append({"text": t,
                        "ids_special": ref.encode(t, True, True),
                        "ids_plain": ref.encode(t, True, False)})
    return {"model": "models/stories260K.gguf",
            "source": "score-greedy reference over the GGUF vocabulary (read with "
                      "the gguf package); cross-checked with a port of llama2.c's "
                      "encode() on tok512.bin",
            "cases": cases, "special": special}


# ---------------------------------------------------------------- corpora


def corpus_fixtures():
    enc = os.path.join(GPT2_DIR, "encoder.json")
    bpe = os.path.join(GPT2_DIR, "vocab.bpe")
    plain = ByteLevelBPETokenizer(enc, bpe)
    vocab, merges = models.BPE.read_file(enc, bpe)
    llama3 = Tokenizer(models.BPE(vocab, merges, ignore_merges=True))
    llama3.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PAT_LLAMA3), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    out = []
    shakes = os.path.join(DATA, "text", "tinyshakespeare.txt")
    raw = open(shakes, "rb").read()
    text = raw.decode("utf-8")
    for pre, tok in (("gpt2", plain), ("llama3", llama3)):
        ids = tok.encode(text).ids
        out.append({"file": "text/tinyshakespeare.txt",
                    "sha256": hashlib.sha256(raw).hexdigest(),
                    "tokenizer": "gpt2", "pre": pre,
                    "n_tokens": len(ids), "fnv1a64": fnv1a64(ids)})
    stories = os.path.join(DATA, "text", "tinystories-val.txt")
    raw = open(stories, "rb").read()
    ids = SpmReference(STORIES).encode(raw.decode("utf-8"), add_bos=True)
    out.append({"file": "text/tinystories-val.txt",
                "sha256": hashlib.sha256(raw).hexdigest(),
                "tokenizer": "models/stories260K.gguf", "pre": "",
                "n_tokens": len(ids), "fnv1a64": fnv1a64(ids)})
    return {"hash": "FNV-1a 64 over the ids as little-endian int32", "corpora": out}


# ---------------------------------------------------------------- chat

# Templates as published in each model's tokenizer_config.json.
TEMPLATES = {
    "chatml": {
        "model": "teknium/OpenHermes-2.5-Mistral-7B",
        "bos": "", "eos": "<|im_end|>",
        "template": "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}",
    },
    "chatml-qwen2": {
        # Qwen2 adds a default system prompt when the conversation has none;
        # llmkit's chatml does not, so only conversations with a system
        # message are compared (see "family" and "with_system_only").
        "family": "chatml", "with_system_only": True,
        "model": "Qwen/Qwen2-7B-Instruct",
        "bos": "", "eos": "<|im_end|>",
        "template": "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}",
    },
    "llama2": {
        "model": "meta-llama/Llama-2-7b-chat-hf",
        "bos": "<s>", "eos": "</s>",
        "template": "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}",
    },
    "llama3": {
        "model": "meta-llama/Meta-Llama-3-8B-Instruct",
        "bos": "<|begin_of_text|>", "eos": "<|eot_id|>",
        "template": "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}",
    },
    "mistral": {
        "model": "mistralai/Mistral-7B-Instruct-v0.1",
        "bos": "<s>", "eos": "</s>",
        "template": "{%- if messages[0]['role'] == 'system' %}\n    {%- set system_message = messages[0]['content'] %}\n    {%- set loop_messages = messages[1:] %}\n{%- else %}\n    {%- set loop_messages = messages %}\n{%- endif %}\n\n{{- bos_token }}\n{%- for message in loop_messages %}\n    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}\n        {{- raise_exception('After the optional system message, conversation roles must alternate user/assistant/user/assistant/...') }}\n    {%- endif %}\n    {%- if message['role'] == 'user' %}\n        {%- if loop.first and system_message is defined %}\n            {{- ' [INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}\n        {%- else %}\n            {{- ' [INST] ' + message['content'] + ' [/INST]' }}\n        {%- endif %}\n    {%- elif message['role'] == 'assistant' %}\n        {{- ' ' + message['content'] + eos_token}}\n    {%- else %}\n        {{- raise_exception('Only user and assistant roles are supported, with the exception of an initial optional system message!') }}\n    {%- endif %}\n{%- endfor %}\n",
    },
    "zephyr": {
        "model": "TinyLlama/TinyLlama-1.1B-Chat-v1.0",
        "bos": "<s>", "eos": "</s>",
        "template": "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}",
    },
    "gemma": {
        "model": "google/gemma-3-1b-it",
        "bos": "<bos>", "eos": "<eos>",
        "template": "{{ bos_token }}\n{%- if messages[0]['role'] == 'system' -%}\n    {%- if messages[0]['content'] is string -%}\n        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}\n    {%- else -%}\n        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}\n    {%- endif -%}\n    {%- set loop_messages = messages[1:] -%}\n{%- else -%}\n    {%- set first_user_prefix = \"\" -%}\n    {%- set loop_messages = messages -%}\n{%- endif -%}\n{%- for message in loop_messages -%}\n    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n        {{ raise_exception(\"Conversation roles must alternate user/assistant/user/assistant/...\") }}\n    {%- endif -%}\n    {%- if (message['role'] == 'assistant') -%}\n        {%- set role = \"model\" -%}\n    {%- else -%}\n        {%- set role = message['role'] -%}\n    {%- endif -%}\n    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else \"\") }}\n    {%- if message['content'] is string -%}\n        {{ message['content'] | trim }}\n    {%- endif -%}\n    {{ '<end_of_turn>\n' }}\n{%- endfor -%}\n{%- if add_generation_prompt -%}\n    {{'<start_of_turn>model\n'}}\n{%- endif -%}\n",
    },
    "phi3": {
        "model": "microsoft/Phi-3-mini-4k-instruct",
        "bos": "<s>", "eos": "<|endoftext|>",
        "template": "{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'assistant' %}{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}",
    },
}

# Extra templates whose family must still be recognised.
DETECT_ONLY = {
    "mistral": "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}",
    "gemma": "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}",
}

CONVERSATIONS = [
    [{"role": "system", "content": "You are a helpful assistant."},
     {"role": "user", "content": "Hello!"},
     {"role": "assistant", "content": "Hi there. How can I help?"},
     {"role": "user", "content": "Tell me a joke."}],
    [{"role": "user", "content": "What is 2+2?"}],
    [{"role": "system", "content": "Be brief."},
     {"role": "user", "content": "  padded question  \n"},
     {"role": "assistant", "content": " padded answer "},
     {"role": "user", "content": "Thanks"}],
]


def render(template, bos, eos, messages, add_generation_prompt):
    def raise_exception(msg):
        raise jinja2.exceptions.TemplateError(msg)
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template).render(
        messages=messages, bos_token=bos, eos_token=eos,
        add_generation_prompt=add_generation_prompt)


def chat_fixtures():
    out = {"conversations": CONVERSATIONS, "templates": [], "detect_only": []}
    for name, t in TEMPLATES.items():
        rendered = []
        for ci, conv in enumerate(CONVERSATIONS):
            if t.get("with_system_only") and conv[0]["role"] != "system":
                continue
            for gen in (True, False):
                rendered.append({"conversation": ci, "add_assistant": gen,
                                 "text": render(t["template"], t["bos"], t["eos"], conv, gen)})
        out["templates"].append({"name": t.get("family", name), "model": t["model"],
                                 "template": t["template"], "rendered": rendered})
    for name, t in DETECT_ONLY.items():
        out["detect_only"].append({"name": name, "template": t})
    return out


def write(name, obj):
    path = os.path.join(OUT, name)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=True, indent=1)
        f.write("\n")
    print("wrote", path)


def main():
    os.makedirs(OUT, exist_ok=True)
    write("gpt2.json", gpt2_fixtures())
    write("pretok.json", pretok_fixtures())
    write("spm.json", spm_fixtures())
    write("chat.json", chat_fixtures())
    write("corpus.json", corpus_fixtures())


if __name__ == "__main__":
    main()
