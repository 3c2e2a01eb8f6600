#!/usr/bin/env python3
"""Generate the tokenizer / chat-template fixtures for moeserve's C++ tests.

The oracle is mistral-common (the reference implementation Mistral publishes for its models):

  tests/data/tokenizer/encode.json
      For every test string: MistralTokenizer.v1()'s SentencePiece tokenizer ids with
      bos=True/eos=False ("ids_bos") and bos=False/eos=False ("ids"), and decode(ids_bos)
      ("decoded", the default SpecialTokenPolicy.IGNORE, which drops <s>/</s>).
      Plus "decode_cases": raw id sequences (control ids in the middle, <unk>, lone and
      truncated byte-fallback pieces) and their decoded text.
  tests/data/tokenizer/chat.json
      "conversations": MistralTokenizer.v1().encode_chat_completion(
          ChatCompletionRequest(messages=...)).tokens for each conversation,
      "rejected": conversations mistral-common refuses, with the exception class and message.

Both files record the mistral_common and sentencepiece versions and the SHA-256 of the
tokenizer.model.v1 that produced them; the script refuses to run if that file differs from
third_party/mistral_tokenizer/tokenizer.model.v1 (the copy compiled into moeserve).

The C++ tests read only the files written here; they never need Python.

Regenerate (from the repo root):
    /root/venv-fixtures/bin/python tools/gen_tokenizer_fixtures.py
Options: --out DIR (default tests/data/tokenizer).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys

import mistral_common
import sentencepiece
from mistral_common.protocol.instruct.messages import AssistantMessage, SystemMessage, UserMessage
from mistral_common.protocol.instruct.request import ChatCompletionRequest
from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENDORED_MODEL = os.path.join(REPO_ROOT, "third_party", "mistral_tokenizer", "tokenizer.model.v1")


def sha256_of(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


# ---------------------------------------------------------------------------------------------
# Encode strings
# ---------------------------------------------------------------------------------------------

HAND_WRITTEN = [
    # Empty and whitespace only.
    "",
    " ",
    "  ",
    "    ",
    "\t",
    "\t\t\t",
    "\n",
    "\n\n\n",
    "\r\n",
    " \n \n ",
    "\t \t\n",
    "\u00a0",  # no-break space
    "\u3000",  # ideographic space
    "\u200b",  # zero-width space
    # Leading / trailing / inner whitespace around words.
    "hello",
    " hello",
    "hello ",
    "  hello  ",
    "hello world",
    "hello  world",
    "hello     world",
    "hello\tworld",
    "hello\nworld",
    "hello\r\nworld",
    "hello\n\n\nworld",
    "\thello",
    "\nhello\n",
    "Hello, World!",
    "HELLO WORLD",
    "hElLo WoRlD",
    # Plain English and punctuation.
    "The quick brown fox jumps over the lazy dog.",
    "It's a dog's life, isn't it? Yes -- it is!",
    "\"Quoted\" and 'single-quoted' text.",
    "(parentheses) [brackets] {braces} <angles>",
    "Ellipsis... and em\u2014dash and en\u2013dash.",
    "Smart \u201cquotes\u201d and \u2018apostrophes\u2019.",
    "e.g. i.e. etc. vs. Mr. Mrs. Dr.",
    "!@#$%^&*()_+-=[]{}|;':\",./<>?`~",
    "Mixtral 8x7B is a sparse mixture-of-experts model.",
    "What is the capital of France?",
    "Explain quantum computing in simple terms.",
    "Write a haiku about the ocean.",
    "Once upon a time, in a land far, far away, there lived a dragon.",
    # Numbers.
    "0",
    "7",
    "42",
    "1234567890",
    "3.14159265358979",
    "-273.15",
    "1e-10",
    "6.022e23",
    "1,000,000",
    "0x1F4A9",
    "0b101010",
    "2024-01-15T12:34:56Z",
    "+1 (555) 123-4567",
    "192.168.0.1:8080",
    "12345678901234567890123456789012345678901234567890",
    "v1.2.3-rc.4+build.5",
    "50% off $19.99 \u20ac5 \u00a310 \u00a5100",
    # Special-token look-alikes must stay text.
    "[INST]",
    "[/INST]",
    "[INST] hello [/INST]",
    "<s>",
    "</s>",
    "<unk>",
    "<s>hello</s>",
    "<s> [INST] What? [/INST]",
    "<0x41>",
    "<0x0A>",
    "<<SYS>>\nYou are helpful.\n<</SYS>>",
    "<|im_start|>user\nhi<|im_end|>",
    "\u2581",  # the SentencePiece meta symbol itself
    "\u2581\u2581hello",
    "a\u2581b",
    # Latin-script languages with diacritics.
    "caf\u00e9 na\u00efve r\u00e9sum\u00e9 fa\u00e7ade",
    "Stra\u00dfe \u00fcber \u00c4rger \u00d6l",
    "\u00bfD\u00f3nde est\u00e1 la biblioteca? \u00a1Ol\u00e9!",
    "Za\u017c\u00f3\u0142\u0107 g\u0119\u015bl\u0105 ja\u017a\u0144",
    "P\u0159\u00edli\u0161 \u017elu\u0165ou\u010dk\u00fd k\u016f\u0148 \u00fap\u011bl \u010f\u00e1belsk\u00e9 \u00f3dy",
    "\u00c5ngstr\u00f6m \u00e6\u00f8\u00e5 \u00c6\u00d8\u00c5",
    "Ti\u1ebfng Vi\u1ec7t c\u00f3 nhi\u1ec1u d\u1ea5u",
    "T\u00fcrk\u00e7e \u0131\u015f\u0131k \u0130stanbul",
    "e\u0301 (combining acute) vs \u00e9 (precomposed)",
    "\ufb01 ligature and \u2460 circled and \uff21 fullwidth",
    # Other scripts.
    "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440! \u041a\u0430\u043a \u0434\u0435\u043b\u0430?",
    "\u0391\u03b8\u03ae\u03bd\u03b1 \u03ba\u03b1\u03b9 \u03b5\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac",
    "\u05e9\u05dc\u05d5\u05dd \u05e2\u05d5\u05dc\u05dd",
    "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645",
    "\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e",
    "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35\u0e0a\u0e32\u0e27\u0e42\u0e25\u0e01",
    "\u10d2\u10d0\u10db\u10d0\u10e0\u10ef\u10dd\u10d1\u10d0",
    "\u0532\u0561\u0580\u0587 \u0561\u0577\u056d\u0561\u0580\u0570",
    "\u1230\u120b\u121d \u12d3\u1208\u121d",
    "\u0bb5\u0ba3\u0b95\u0bcd\u0b95\u0bae\u0bcd \u0b89\u0bb2\u0b95\u0bae\u0bcd",
    "\u09b9\u09cd\u09af\u09be\u09b2\u09cb \u09ac\u09bf\u09b6\u09cd\u09ac",
    "\u0c39\u0c32\u0c4b \u0c2a\u0c4d\u0c30\u0c2a\u0c02\u0c1a\u0c02",
    "\u0dc3\u0dd4\u0db6 \u0d8b\u0daf\u0dd1\u0dc3\u0db1\u0d9a\u0dca",
    "\u1781\u17d2\u1798\u17c2\u179a",
    "\u13a3\u13b3\u13a9 \u13a6\u13ec\u13c2\u13af\u13cd\u13d7",  # Cherokee
    "\u16a0\u16a2\u16a6\u16a8\u16b1\u16b2",  # Runic
    "\u2800\u2801\u2803\u2809\u2819",  # Braille
    # CJK.
    "\u4f60\u597d\uff0c\u4e16\u754c\uff01",
    "\u6211\u7231\u5317\u4eac\u5929\u5b89\u95e8",
    "\u4eca\u65e5\u306f\u3044\u3044\u5929\u6c17\u3067\u3059\u306d\u3002",
    "\u30ab\u30bf\u30ab\u30ca\u3068\u3072\u3089\u304c\u306a\u3068\u6f22\u5b57",
    "\uff8a\uff9d\uff76\uff78\uff76\uff80\uff76\uff85",  # half-width katakana
    "\uc548\ub155\ud558\uc138\uc694 \uc138\uacc4",
    "\u9f98\u9f49\u9750\u9a6b",  # rare Han
    "\U00020000\U0002a6d6\U0002b734",  # CJK extension B..D (byte fallback)
    "\u4e2d\u6587 English \u6df7\u5408 text \u65e5\u672c\u8a9e",
    "\u3010\u6ce8\u610f\u3011\u300c\u5f15\u7528\u300d\u300e\u4e8c\u91cd\u300f",
    # Emoji, including ZWJ sequences, skin tones, flags and keycaps.
    "\U0001f600",
    "\U0001f600\U0001f603\U0001f604\U0001f601",
    "I love \U0001f355 and \U0001f363!",
    "\U0001f44d\U0001f3fb\U0001f44d\U0001f3fc\U0001f44d\U0001f3fd\U0001f44d\U0001f3fe\U0001f44d\U0001f3ff",
    "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466",
    "\U0001f469\U0001f3fd\u200d\U0001f4bb",
    "\U0001f3f3\ufe0f\u200d\U0001f308",
    "\U0001f1eb\U0001f1f7\U0001f1ef\U0001f1f5\U0001f1fa\U0001f1f8",
    "1\ufe0f\u20e3 #\ufe0f\u20e3",
    "\u2764\ufe0f \u2764 \u263a\ufe0f",
    "\U0001f9d1\u200d\U0001f91d\u200d\U0001f9d1",
    "\U0001faf6\U0001fae0\U0001fa7b",
    # Symbols that force byte fallback.
    "\U0001d518\U0001d52b\U0001d526\U0001d520\U0001d52c\U0001d521\U0001d522",  # math fraktur
    "\U0001d11e \U0001d160",  # musical symbols
    "\U00010300\U00010301\U00010302",  # Old Italic
    "\U00013000\U00013001",  # Egyptian hieroglyphs
    "\ue000\uf8ff",  # private use
    "\U000f0000",  # supplementary private use
    "\x00",
    "a\x00b",
    "\x01\x02\x03\x1b[31mred\x1b[0m",
    "\x7f\u0080\u009f",
    "\ufeffBOM at start",
    "\ufffd replacement char",
    "\u202eright-to-left override",
    "\u2028line separator\u2029paragraph separator",
    # Code.
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n",
    "import numpy as np\nx = np.zeros((3, 4), dtype=np.float32)\nprint(x.shape)",
    "class Foo:\n\tdef __init__(self):\n\t\tself.x = 1\n",
    "#include <iostream>\nint main() {\n  std::cout << \"hi\" << std::endl;\n  return 0;\n}\n",
    "template <typename T>\nT max(T a, T b) { return a > b ? a : b; }",
    "fn main() {\n    let v: Vec<i32> = (0..10).map(|x| x * x).collect();\n    println!(\"{:?}\", v);\n}",
    "package main\n\nimport \"fmt\"\n\nfunc main() {\n\tfmt.Println(\"hello\")\n}\n",
    "const add = (a, b) => a + b;\nconsole.log(`sum: ${add(1, 2)}`);",
    "public static void main(String[] args) { System.out.println(\"Hi\"); }",
    "SELECT name, COUNT(*) AS n FROM users WHERE age >= 18 GROUP BY name ORDER BY n DESC;",
    "#!/bin/bash\nset -euo pipefail\nfor f in *.txt; do echo \"$f\"; done",
    "<html>\n  <body>\n    <p class=\"x\">Hello &amp; welcome</p>\n  </body>\n</html>",
    "{\"name\": \"moeserve\", \"version\": [0, 1, 0], \"ok\": true, \"x\": null}",
    "key: value\nlist:\n  - a\n  - b\n",
    "\\documentclass{article}\n\\begin{equation} E = mc^2 \\end{equation}",
    "$$\\int_0^\\infty e^{-x^2}\\,dx = \\frac{\\sqrt{\\pi}}{2}$$",
    "x := [y for y in range(10) if y % 2 == 0]  # comment",
    "if (a && b || !c) { x <<= 2; y >>= 1; z ^= ~w; }",
    "    indented four\n        indented eight\n\t\ttabs",
    "// TODO(someone): fix this\n/* block\n   comment */",
    "printf(\"%d %s %5.2f\\n\", i, s, f);",
    "https://example.com/path?query=1&other=two#frag",
    "user@example.com",
    "C:\\Users\\Name\\Documents\\file.txt",
    "/usr/local/lib/python3.11/site-packages",
    "a_b_c_d snake_case camelCase PascalCase kebab-case SCREAMING_CASE",
    "=====\n-----\n*****\n#####",
    "| a | b |\n|---|---|\n| 1 | 2 |",
    # Very long words and repetitions.
    "supercalifragilisticexpialidocious",
    "pneumonoultramicroscopicsilicovolcanoconiosis",
    "Rindfleischetikettierungs\u00fcberwachungsaufgaben\u00fcbertragungsgesetz",
    "a" * 100,
    "ab" * 80,
    "x" * 513,
    "\u00e9" * 64,
    "\u4e2d" * 50,
    "\U0001f600" * 20,
    "ha" * 40 + "!",
    " " * 33,
    "\n" * 17,
    "\t" * 9,
    "-" * 80,
    "0123456789" * 12,
    "The " * 50,
    "antidisestablishmentarianism" * 4,
]


def generated_strings() -> list[str]:
    """Deterministic random mixtures (fixed seed) over the alphabets above."""
    rng = random.Random(20240115)
    alphabets = [
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
        "0123456789",
        " \t\n",
        ".,;:!?'\"()[]{}<>-_=+*/\\|@#$%^&~`",
        "\u00e9\u00e8\u00ea\u00eb\u00e0\u00e2\u00e4\u00f4\u00f6\u00fb\u00fc\u00e7\u00df\u00f1",
        "\u0430\u0431\u0432\u0433\u0434\u0435\u0436\u0437\u0438\u043a\u043b\u043c\u043d",
        "\u4e00\u4e8c\u4e09\u4eba\u5927\u5c0f\u5c71\u5ddd\u65e5\u6708\u6c34\u706b\u6728",
        "\u3042\u3044\u3046\u3048\u304a\u30a2\u30a4\u30a6\u30a8\u30aa",
        "\uac00\ub098\ub2e4\ub77c\ub9c8\ubc14\uc0ac",
        "\u0627\u0628\u062a\u062b\u062c\u062d\u062e",
        "\U0001f600\U0001f44d\U0001f3fd\u200d\U0001f525\u2764\ufe0f\U0001f680",
        "\U0001d400\U0001d401\U0001d402\U00010300\U00020001",
    ]
    out = []
    for length in [1, 2, 3, 5, 8, 13, 21, 34, 55, 89]:
        for _ in range(5):
            chosen = rng.sample(alphabets, k=rng.randint(1, 4))
            pool = "".join(chosen)
            out.append("".join(rng.choice(pool) for _ in range(length)))
    # Words joined by irregular whitespace.
    words = ["alpha", "beta", "gamma", "\u00e9t\u00e9", "\u4e16\u754c", "\u043c\u0438\u0440",
             "\U0001f600", "x1", "__init__", "a.b", "[INST]", "<s>"]
    spaces = [" ", "  ", "   ", "\t", "\n", " \n", "\n\n", "\u00a0", ""]
    for _ in range(40):
        n = rng.randint(1, 8)
        parts = []
        for i in range(n):
            if i or rng.random() < 0.3:
                parts.append(rng.choice(spaces))
            parts.append(rng.choice(words))
        if rng.random() < 0.3:
            parts.append(rng.choice(spaces))
        out.append("".join(parts))
    return out


def decode_id_cases() -> list[list[int]]:
    """Raw id sequences for decode(): control ids in the middle, <unk>, partial UTF-8 bytes."""
    return [
        [],
        [1],
        [2],
        [0],
        [1, 2],
        [1, 0, 2],
        [1, 22557, 2],  # <s> Hello </s>
        [22557, 2, 1, 22557],  # control tokens between text pieces
        [28705],  # lone "▁"
        [28705, 28705, 28705],
        [3],  # <0x00>
        [13],  # <0x0A>
        [13, 13, 13],
        [131],  # <0x80>: a lone continuation byte
        [231],  # <0xE4>: first byte of a 3-byte sequence
        [231, 188],  # <0xE4><0xB9>: truncated 3-byte sequence
        [231, 188, 156],  # <0xE4><0xB9><0x99>: complete "乙"
        [243, 162, 155, 136],  # <0xF0><0x9F><0x98><0x85>: complete emoji
        [243, 162, 155],  # truncated 4-byte sequence
        [243, 162, 155, 22557],  # truncated sequence followed by text
        [258],  # <0xFF>: never valid in UTF-8
        [195, 258, 195],  # <0xC0><0xFF><0xC0>
        [259, 260, 261, 262, 263],
        [31999, 31998, 31997],
        list(range(3, 259)),  # every byte piece in order
    ]


# ---------------------------------------------------------------------------------------------
# Chat conversations
# ---------------------------------------------------------------------------------------------


def S(c: str) -> dict:
    return {"role": "system", "content": c}


def U(c: str) -> dict:
    return {"role": "user", "content": c}


def A(c: str) -> dict:
    return {"role": "assistant", "content": c}


CONVERSATIONS = [
    ("single_user", [U("Hello!")]),
    ("single_user_question", [U("What is the capital of France?")]),
    ("single_user_empty", [U("")]),
    ("single_user_space", [U(" ")]),
    ("single_user_newlines", [U("\n\nline after blank lines\n\n")]),
    ("single_user_leading_trailing_space", [U("  padded  ")]),
    ("single_user_inst_literal", [U("[INST] nested [/INST]")]),
    ("single_user_special_literals", [U("<s> and </s> are text here")]),
    ("single_user_code", [U("def f(x):\n    return x * 2\n\nprint(f(21))")]),
    ("single_user_cjk", [U("\u4f60\u597d\uff0c\u8bf7\u7528\u4e2d\u6587\u56de\u7b54\u3002")]),
    ("single_user_emoji", [U("\U0001f44b\U0001f3fd \U0001f468\u200d\U0001f469\u200d\U0001f467 \U0001f1eb\U0001f1f7")]),
    ("single_user_mixed_scripts",
     [U("\u041f\u0440\u0438\u0432\u0435\u0442 \u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627 \u3053\u3093\u306b\u3061\u306f")]),
    ("single_user_byte_fallback", [U("\U00020000 \U0001d518\U0001d52b \ue000")]),
    ("two_turns", [U("Hi"), A("Hello! How can I help?"), U("Tell me a joke.")]),
    ("three_turns",
     [U("1+1?"), A("2"), U("2+2?"), A("4"), U("3+3?")]),
    ("many_turns", [m for i in range(6) for m in (U(f"question {i}"), A(f"answer {i}"))] + [U("last")]),
    ("system_then_user", [S("You are a helpful assistant."), U("Hello")]),
    ("system_multi_turn",
     [S("Answer in French."), U("Hello"), A("Bonjour"), U("Thank you")]),
    ("system_only", [S("You are terse.")]),
    ("system_empty", [S(""), U("Hi")]),
    ("system_after_user", [U("Hi"), S("Be brief.")]),
    ("two_system_messages", [S("Rule one."), S("Rule two."), U("Go")]),
    ("system_between_users", [U("first"), S("system in the middle"), U("second")]),
    ("system_mid_conversation", [U("a"), A("b"), U("c"), S("late system"), U("d")]),
    ("system_last", [U("a"), A("b"), U("c"), S("trailing system")]),
    ("system_then_assistant", [S("sys"), A("I speak first"), U("ok")]),
    ("assistant_first", [A("I start"), U("and the user answers")]),
    ("consecutive_users", [U("part one"), U("part two"), U("part three")]),
    ("consecutive_users_with_empty", [U("part one"), U(""), U("part three")]),
    ("consecutive_assistants", [U("q"), A("first half"), A("second half"), U("next")]),
    ("empty_user_in_multi_turn", [U(""), A("Nothing to say?"), U("")]),
    ("system_with_newlines", [S("Line 1\nLine 2\n\n"), U("\nHi")]),
    ("unicode_conversation",
     [S("R\u00e9ponds en fran\u00e7ais \U0001f1eb\U0001f1f7"), U("Caf\u00e9 ou th\u00e9 ?"),
      A("Th\u00e9 \U0001f375, merci."), U("\u4e3a\u4ec0\u4e48\uff1f")]),
    ("code_conversation",
     [U("Write hello world in C."),
      A("```c\n#include <stdio.h>\nint main(void) {\n  puts(\"hello\");\n}\n```"),
      U("Now in Rust.")]),
    ("whitespace_content", [U("\t"), A(" "), U("\n")]),
    ("assistant_with_eos_literal", [U("say </s>"), A("</s>"), U("again")]),
    ("long_user", [U("lorem ipsum dolor sit amet " * 40)]),
]

REJECTED = [
    ("empty", []),
    ("single_assistant", [A("Hi")]),
    ("ends_with_assistant", [U("Hi"), A("Hello")]),
    ("ends_with_assistant_after_system", [S("sys"), U("Hi"), A("Hello")]),
    ("system_after_assistant", [U("Hi"), A("Hello"), S("sys"), U("Bye")]),
    ("empty_assistant", [U("Hi"), A(""), U("Bye")]),
    ("system_then_empty_assistant", [S("sys"), A(""), U("Bye")]),
    ("two_errors_order_first", [U("Hi"), A(""), S("s"), U("x")]),
]


def to_mistral_messages(messages: list[dict]) -> list:
    classes = {"system": SystemMessage, "user": UserMessage, "assistant": AssistantMessage}
    return [classes[m["role"]](content=m["content"]) for m in messages]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join(REPO_ROOT, "tests", "data", "tokenizer"))
    args = parser.parse_args()

    mistral = MistralTokenizer.v1()
    tok = mistral.instruct_tokenizer.tokenizer
    model_path = str(tok.file_path)
    model_sha = sha256_of(model_path)
    vendored_sha = sha256_of(VENDORED_MODEL)
    if model_sha != vendored_sha:
        print(f"error: {model_path} (sha256 {model_sha}) differs from {VENDORED_MODEL} "
              f"(sha256 {vendored_sha}); vendor the matching model first", file=sys.stderr)
        return 1

    header = {
        "generator": "tools/gen_tokenizer_fixtures.py",
        "mistral_common_version": mistral_common.__version__,
        "sentencepiece_version": sentencepiece.__version__,
        "tokenizer_model": "tokenizer.model.v1",
        "tokenizer_model_sha256": model_sha,
        "tokenizer_model_size": os.path.getsize(model_path),
        "bos_id": tok.bos_id,
        "eos_id": tok.eos_id,
        "unk_id": tok.unk_id,
        "vocab_size": tok.n_words,
    }

    texts = HAND_WRITTEN + generated_strings()
    seen = set()
    unique_texts = []
    for t in texts:
        if t not in seen:
            seen.add(t)
            unique_texts.append(t)

    encode_cases = []
    for t in unique_texts:
        ids_bos = tok.encode(t, bos=True, eos=False)
        ids = tok.encode(t, bos=False, eos=False)
        assert ids_bos == [tok.bos_id] + ids
        encode_cases.append({"text": t, "ids_bos": ids_bos, "ids": ids, "decoded": tok.decode(ids_bos)})
    decode_cases = [{"ids": ids, "decoded": tok.decode(ids)} for ids in decode_id_cases()]

    byte_fallback_cases = sum(1 for c in encode_cases if any(3 <= i <= 258 for i in c["ids"]))
    print(f"{len(encode_cases)} encode cases ({byte_fallback_cases} use byte fallback), "
          f"{len(decode_cases)} decode cases")

    conversations = []
    for name, messages in CONVERSATIONS:
        result = mistral.encode_chat_completion(ChatCompletionRequest(messages=to_mistral_messages(messages)))
        conversations.append({"name": name, "messages": messages, "tokens": result.tokens, "text": result.text})
    rejected = []
    for name, messages in REJECTED:
        try:
            mistral.encode_chat_completion(ChatCompletionRequest(messages=to_mistral_messages(messages)))
        except Exception as e:  # noqa: BLE001 - the exception class and message are the fixture
            rejected.append({"name": name, "messages": messages, "exception": type(e).__name__, "message": str(e)})
            continue
        print(f"error: mistral-common accepted conversation {name!r} listed as rejected", file=sys.stderr)
        return 1
    print(f"{len(conversations)} conversations, {len(rejected)} rejected conversations")

    os.makedirs(args.out, exist_ok=True)
    write_json(os.path.join(args.out, "encode.json"), header, {"cases": encode_cases, "decode_cases": decode_cases})
    write_json(os.path.join(args.out, "chat.json"), header, {"conversations": conversations, "rejected": rejected})
    return 0


def write_json(path: str, header: dict, lists: dict[str, list]) -> None:
    """Header fields first, then one list element per line (reviewable diffs, small files)."""
    lines = ["{"]
    for key, value in header.items():
        lines.append(f"  {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)},")
    items = list(lists.items())
    for n, (key, values) in enumerate(items):
        lines.append(f"  {json.dumps(key)}: [")
        for i, v in enumerate(values):
            sep = "," if i + 1 < len(values) else ""
            lines.append("    " + json.dumps(v, ensure_ascii=False) + sep)
        lines.append("  ]" + ("," if n + 1 < len(items) else ""))
    lines.append("}")
    text = "\n".join(lines) + "\n"
    json.loads(text)  # the hand-rolled layout must still be valid JSON
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {path} ({len(text.encode('utf-8'))} bytes)")


if __name__ == "__main__":
    sys.exit(main())
