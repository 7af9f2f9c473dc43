#!/usr/bin/env python3
"""Renders the chat-template fixtures in tests/data/chat/<family>.jinja with Python jinja2, set up
the way Hugging Face transformers renders chat templates (apply_chat_template), and writes
tests/data/chat/<family>.cases.json: the conversations, the variables and the exact expected text
(or the raised error). tests/chat/chat_template_test.cc compares moe's renderer byte for byte.

Environment as transformers builds it: ImmutableSandboxedEnvironment(trim_blocks=True,
lstrip_blocks=True, extensions=[loopcontrols]), tojson = json.dumps(ensure_ascii=False, indent=...),
globals raise_exception (raises) and strftime_now (here pinned to 2024-07-26 08:09:10 so that the
goldens do not depend on the day). Needs jinja2 (pip or Debian python3-jinja2); never needed to
build or test.

  python3 scripts/gen_chat_goldens.py
"""
import datetime
import json
import os

import jinja2
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "tests", "data", "chat")
FIXED_NOW = datetime.datetime(2024, 7, 26, 8, 9, 10)


class TemplateError(Exception):
    pass


def make_env():
    def raise_exception(message):
        raise TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    def strftime_now(fmt):
        return FIXED_NOW.strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


SYSTEM = "You are a terse assistant. Answer in one line."
CHAT = [
    {"role": "system", "content": SYSTEM},
    {"role": "user", "content": "  What is 2+2?  "},
    {"role": "assistant", "content": "4, of course.\n"},
    {"role": "user", "content": "Und auf Deutsch? Größe: ✓ \"quoted\" 'single'"},
]
NO_SYSTEM = CHAT[1:]

QWEN3_TOOLS = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object",
                       "properties": {"city": {"type": "string", "description": "City name"},
                                      "days": {"type": "integer"}},
                       "required": ["city"]},
    },
}]
QWEN3_THINK = [
    {"role": "system", "content": SYSTEM},
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": "<think>\nSmall sum.\n</think>\n\n4"},
    {"role": "user", "content": "And 3+3?"},
    {"role": "assistant", "content": "<think>\nAlso small.\n</think>\n\n6"},
]
QWEN3_TOOL_CALL = [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": "",
     "tool_calls": [{"type": "function",
                     "function": {"name": "get_weather",
                                  "arguments": {"city": "Paris", "days": 1}}}]},
    {"role": "tool", "content": "{\"temp_c\": 21}"},
    {"role": "tool", "content": "{\"wind\": \"low\"}"},
]
DEEPSEEK_TOOL_CALL = [
    {"role": "system", "content": SYSTEM},
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": None,
     "tool_calls": [{"type": "function",
                     "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
    {"role": "tool", "content": "{\"temp_c\": 21}"},
    {"role": "assistant", "content": "21 degrees."},
    {"role": "user", "content": "Thanks"},
]

# family -> (bos_token, eos_token, [(case name, messages, extra variables)])
FAMILIES = {
    "mixtral": ("<s>", "</s>", [
        ("chat", CHAT, {}),
        ("no_system", NO_SYSTEM, {}),
        ("not_alternating", [CHAT[1], CHAT[1]], {}),
        ("bad_role", [CHAT[1], {"role": "tool", "content": "x"}], {}),
    ]),
    "qwen2": ("", "<|im_end|>", [
        ("chat", CHAT, {}),
        ("no_system", NO_SYSTEM, {}),
    ]),
    "qwen3": ("", "<|im_end|>", [
        ("chat", CHAT, {}),
        ("no_system", NO_SYSTEM, {}),
        ("thinking", QWEN3_THINK, {}),
        ("no_thinking", QWEN3_THINK[:4], {"enable_thinking": False}),
        ("tools", QWEN3_TOOL_CALL, {"tools": QWEN3_TOOLS}),
        ("tools_system", CHAT, {"tools": QWEN3_TOOLS}),
    ]),
    "olmoe": ("<|endoftext|>", "<|endoftext|>", [
        ("chat", CHAT, {}),
        ("no_system", NO_SYSTEM, {}),
    ]),
    "deepseek_v2": ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", [
        ("chat", CHAT, {}),
        ("no_system", NO_SYSTEM, {}),
    ]),
    "deepseek_v3": ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", [
        ("chat", CHAT, {}),
        ("no_system", NO_SYSTEM, {}),
        ("tools", DEEPSEEK_TOOL_CALL, {}),
    ]),
    "llama2": ("<s>", "</s>", [
        ("chat", CHAT, {}),
        ("no_system", NO_SYSTEM, {}),
        ("not_alternating", [CHAT[0], CHAT[2]], {}),
    ]),
    "llama3": ("<|begin_of_text|>", "<|eot_id|>", [
        ("chat", CHAT, {}),
        ("no_system", NO_SYSTEM, {}),
    ]),
}


def main():
    env = make_env()
    for family, (bos, eos, cases) in FAMILIES.items():
        with open(os.path.join(DATA, family + ".jinja"), encoding="utf-8") as f:
            source = f.read()
        template = env.from_string(source)
        out_cases = []
        for name, messages, extra in cases:
            for agp in (False, True):
                case = {"name": f"{name}/{'gen' if agp else 'nogen'}", "messages": messages,
                        "add_generation_prompt": agp, "extra": extra}
                try:
                    case["expected"] = template.render(messages=messages, bos_token=bos,
                                                       eos_token=eos, add_generation_prompt=agp,
                                                       **extra)
                except TemplateError as e:
                    case["error"] = str(e)
                out_cases.append(case)
        doc = {"family": family, "bos_token": bos, "eos_token": eos,
               "generator": f"scripts/gen_chat_goldens.py, jinja2 {jinja2.__version__}",
               "cases": out_cases}
        with open(os.path.join(DATA, family + ".cases.json"), "w", encoding="utf-8") as f:
            json.dump(doc, f, ensure_ascii=False, indent=1)
            f.write("\n")
        print(f"{family}: {len(out_cases)} cases")


if __name__ == "__main__":
    main()
