#!/usr/bin/env python3
"""Renders the chat-template fixtures in tests/data/chat/<family>.jinja with Python jinja2, set up
the way Hugging Face transformers renders chat templates (apply_chat_template), and writes
tests/data/chat/<family>.cases.json: the conversations, the variables and the exact expected text
(or the raised error). tests/chat/chat_template_test.cc compares moe's renderer byte for byte.

Environment as transformers builds it: ImmutableSandboxedEnvironment(trim_blocks=True,
lstrip_blocks=True, extensions=[GenerationTag, loopcontrols]), tojson = json.dumps(ensure_ascii=False, indent=...),
globals raise_exception (raises) and strftime_now (here pinned to 2024-07-26 08:09:10 so that the
goldens do not depend on the day). Needs jinja2 (pip or Debian python3-jinja2); never needed to
build or test.

  python3 scripts/gen_chat_goldens.py
"""
import datetime
import json
import os

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "tests", "data", "chat")
FIXED_NOW = datetime.datetime(2024, 7, 26, 8, 9, 10)


class TemplateError(Exception):
    pass


class GenerationTag(Extension):
    """{% generation %}...{% endgeneration %} as transformers' AssistantTracker parses it (the
    body renders unchanged; transformers only records where it lands)."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

    def _render(self, caller):
        return caller()


def make_env():
    def raise_exception(message):
        raise TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    def strftime_now(fmt):
        return FIXED_NOW.strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[GenerationTag, loopcontrols])
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


# Small templates for the interpreter's unit tests (tests/chat/jinja_test.cc): expressions,
# filters, tests, loops, scoping and whitespace control, each with the variables it renders with.
UNIT_VARS = {"s": "  Hello World  ", "n": 7, "f": 2.5, "l": [3, 1, 2], "d": {"b": 1, "a": [1, 2]},
             "msgs": [{"role": "system", "content": "S"}, {"role": "user", "content": "U1"},
                      {"role": "assistant", "content": "A1", "tool_calls": [{"function": {"name": "f"}}]},
                      {"role": "user", "content": "U2"}],
             "u": "héllo wörld", "t": True, "z": None}
UNIT = [
    # literals and printing
    "{{ 1 }} {{ -2 }} {{ 1.0 }} {{ 1.5e3 }} {{ 1e20 }} {{ 1e-5 }} {{ 0.1 + 0.2 }} {{ 1_000 }}",
    "{{ 'a\\tb\\n' }}|{{ \"q'\" }}|{{ 'x\\u00e9\\x41' }}|{{ 'un\\known' }}|{{ 'ab' 'cd' }}",
    "{{ true }} {{ False }} {{ none }} {{ None }} {{ [1, 'a', none, true, 2.0] }} {{ {'k': 'v', 1: [2]} }}",
    "{{ (1, 2) }} {{ () }} {{ [] }} {{ {} }} {{ missing }}|{{ d }}|{{ \"it's\" }}",
    # arithmetic
    "{{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 6 / 3 }} {{ 2 ** 10 }} {{ 2 ** -1 }}",
    "{{ 1 + 2 * 3 - 4 }} {{ (1 + 2) * 3 }} {{ -n }} {{ n * f }} {{ 'ab' * 3 }} {{ [1] * 2 }} {{ l + [9] }}",
    "{{ 'a' ~ 1 ~ none ~ missing ~ 2.0 }} {{ (1 + 2) ~ 3 }} {{ '%s-%d' % ('a', 3) }} {{ '%s!' % 'x' }}",
    "{{ -7.5 // 2 }} {{ 7.5 % 2 }} {{ -1 ** 2 }} {{ not 1 == 2 }} {{ 3 > 2 > 1 }} {{ 1 < 2 > 3 }}",
    # comparisons and logic
    "{{ 1 == 1.0 }} {{ true == 1 }} {{ 'a' < 'b' }} {{ [1, 2] < [1, 3] }} {{ 'ell' in 'hello' }} {{ 2 in l }} {{ 'a' in d }} {{ 'z' not in d }}",
    "{{ 0 or 'x' }} {{ 1 and 'y' }} {{ '' or [] }} {{ none and 1 }} {{ not none }} {{ missing or 'dflt' }}",
    "{{ 'yes' if t else 'no' }} {{ 'yes' if z else 'no' }} {{ 'a' if false }}|{{ 1 if 0 else 2 if 0 else 3 }}",
    # attribute and item access, slicing
    "{{ msgs[0].role }} {{ msgs[0]['content'] }} {{ msgs[-1].content }} {{ msgs[9] }}|{{ msgs[2].tool_calls[0].function.name }}",
    "{{ l[1:] }} {{ l[:-1] }} {{ l[::-1] }} {{ l[::2] }} {{ l[5:] }} {{ u[1:4] }} {{ u[::-1] }} {{ u[-1] }} {{ 'abc'.0 }}",
    "{{ msgs[0].nope }}|{{ none.x }}|{{ d.get('a') }} {{ d.get('zz', 5) }} {{ d.get('zz') }} {{ d['b'] }}",
    # string methods
    "[{{ s.strip() }}] [{{ s.lstrip() }}] [{{ s.rstrip() }}] [{{ 'xxaxx'.strip('x') }}] [{{ s.upper() }}] [{{ s.lower() }}]",
    "{{ 'a,b,,c'.split(',') }} {{ ' a  b\\tc '.split() }} {{ 'a b c'.split(' ', 1) }} {{ u.split('ö') }}",
    "{{ s.startswith('  He') }} {{ s.endswith(('x', '  ')) }} {{ 'aXbXc'.replace('X', '-') }} {{ 'aaa'.replace('a', 'b', 2) }}",
    "{{ 'hello world'.title() }} {{ 'hELLO'.capitalize() }} {{ u.upper() }} {{ 'abcabc'.find('c') }} {{ 'abcabc'.count('bc') }} {{ '-'.join(['a', 'b']) }}",
    # filters
    "{{ s|trim }}|{{ 'xxyxx'|trim('x') }}|{{ l|length }} {{ u|length }} {{ d|length }} {{ missing|length }} {{ s|count }}",
    "{{ 'Ab'|upper }} {{ 'Ab'|lower }} {{ 'hello world'|capitalize }} {{ 'hello world'|title }} {{ 3|string ~ 'x' }}",
    "{{ l|join(', ') }} {{ l|join }} {{ msgs|join('/', attribute='role') }} {{ l|first }} {{ l|last }} {{ []|first }}|",
    "{{ missing|default('d') }} {{ ''|default('d') }} {{ ''|default('d', true) }} {{ none|default('d') }} {{ missing|d('x') }}",
    "{{ d|items|list }} {{ d.items()|list }} {{ d.keys()|list }} {{ d.values()|list }} {{ 'ab'|list }} {{ missing|items|list }}",
    "{{ msgs|selectattr('role', 'equalto', 'user')|map(attribute='content')|list }} {{ msgs|rejectattr('role', 'eq', 'user')|list|length }}",
    "{{ msgs|selectattr('tool_calls', 'defined')|list|length }} {{ msgs|selectattr('tool_calls')|list|length }} {{ [0, 1, 2, '']|select|list }} {{ [1, 2, 3, 4]|reject('odd')|list }}",
    "{{ l|map('string')|join('+') }} {{ ['a', 'B']|map('upper')|list }} {{ msgs|map(attribute='nope', default='-')|join }}",
    "{{ '3'|int }} {{ '3.7'|int }} {{ 'x'|int }} {{ 'x'|int(9) }} {{ 3.9|int }} {{ '0x1A'|int(0, 16) }} {{ '2.5'|float }} {{ 'ff'|int(base=16) }}",
    "{{ l|sort }} {{ l|sort(reverse=true) }} {{ msgs|sort(attribute='role')|map(attribute='content')|join }} {{ [1, 2, 1]|unique|list }} {{ l|reverse|list }} {{ 'abc'|reverse }}",
    "{{ l|max }} {{ l|min }} {{ l|sum }} {{ [1.5, 2]|sum }} {{ -3|abs }} {{ 2.567|round(2) }} {{ 2.5|round }} {{ 2.1|round(method='ceil') }}",
    "{{ 'aXb'|replace('X', 'Y') }} {{ 'a\\nb'|indent(2) }}|{{ 'a\\n\\nb'|indent(2, true) }}|{{ 'one two  three'|wordcount }} {{ x|safe }}",
    "{{ d|tojson }} {{ msgs[2]|tojson }} {{ 'é\"\\n'|tojson }} {{ [1.0, none, true]|tojson }} {{ missing is defined|tojson }}",
    "{{ d|tojson(indent=2) }}|{{ [[]]|tojson(indent=4) }}|{{ {}|tojson(indent=1) }}",
    "{{ d|dictsort }} {{ {'b': 2, 'A': 1}|dictsort }} {{ d|attr('get') is callable }}",
    # tests
    "{{ missing is defined }} {{ n is defined }} {{ z is none }} {{ z is not none }} {{ s is string }} {{ n is number }} {{ f is float }} {{ n is integer }} {{ t is boolean }}",
    "{{ d is mapping }} {{ l is mapping }} {{ l is iterable }} {{ s is iterable }} {{ n is iterable }} {{ l is sequence }} {{ d is sequence }} {{ t is true }} {{ 1 is true }} {{ false is false }}",
    "{{ n is odd }} {{ n is even }} {{ 9 is divisibleby 3 }} {{ 9 is divisibleby(4) }} {{ 1 is eq 1 }} {{ 2 is gt 1 }} {{ 'ab' is lower }} {{ 'AB' is upper }} {{ 2 is in l }} {{ z is sameas none }}",
    # statements, loops and scoping
    "{% for x in l %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }}{{ x }};{% endfor %}",
    "{% for x in l if x > 1 %}{{ x }}@{{ loop.index }}/{{ loop.length }} {% else %}none{% endfor %}|{% for x in [] %}x{% else %}empty{% endfor %}",
    "{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}{% for k in d %}{{ k }}{% endfor %}{% for c in 'hé' %}[{{ c }}]{% endfor %}",
    "{% for x in l %}{% if x == 1 %}{% continue %}{% endif %}{% if x == 2 %}{% break %}{% endif %}{{ x }}{% endfor %}|{{ loop }}",
    "{% for x in l %}{{ loop.previtem }}-{{ loop.nextitem }}-{{ loop.cycle('a', 'b') }} {% endfor %}",
    "{% set x = 1 %}{% for i in l %}{% set x = i %}{{ x }}{% endfor %}{{ x }}{% if true %}{% set x = 9 %}{% endif %}{{ x }}",
    "{% set ns = namespace(c=0, last='') %}{% for m in msgs %}{% set ns.c = ns.c + 1 %}{% set ns.last = m.role %}{% endfor %}{{ ns.c }} {{ ns.last }}",
    "{% set a, b = [1, 2] %}{{ a }}{{ b }}{% set t2 = 1, 2 %}{{ t2 }}{% set blk %}in {{ a }}{% endset %}[{{ blk }}]",
    "{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}{{ greet('A') }} {{ greet('B', '?') }} {{ greet(punct='.', name='C') }}",
    "{% macro rec(k) %}{% if k > 0 %}{{ k }}{{ rec(k - 1) }}{% endif %}{% endmacro %}{{ rec(4) }}",
    "{% for i in range(3) %}{{ i }}{% endfor %} {{ range(2, 8, 3)|list }} {{ range(3, 0, -1)|list }}",
    "{% for m in msgs[::-1] %}{{ (msgs|length - 1) - loop.index0 }}{{ m.role[0] }}{% endfor %}",
    "{% if n > 10 %}big{% elif n > 5 %}mid{% else %}small{% endif %} {% if missing %}a{% elif not missing %}b{% endif %}",
    "{{ raise_exception is defined }} {{ strftime_now('%Y-%m-%d %H:%M:%S %b %a') }}",
    "{% generation %}gen {{ n }}{% endgeneration %}|{% raw %}{{ not parsed }} {% if %}{% endraw %}|{# comment #}end",
    # whitespace control (trim_blocks + lstrip_blocks)
    "a  {% if true %}\n  b\n  {% endif %}  \nc",
    "line1\n{% if true %}\n  yes\n{% endif %}\n",
    "  {# c #}\nx\n    {% set q = 1 %}\ny",
    "x {{- ' y ' -}} z {%- if true -%}  \n\n w  {%- endif %}|",
    "{% for i in l %}\n    {{ i }}\n{% endfor %}\n",
    "{%- for i in l -%}\n  {{- i -}}\n{%- endfor -%}\n!",
    "{% if true %}  {% endif %}x\n  {%+ if true %}y{% endif %}\n  {{ 'v' }}\n",
    "a\r\nb\rc{% if true %}\r\nd{% endif %}\n\n",
    "{{ 1 }}\n{{ 2 }}\n  {% if true %}  x  {% endif %}  \n",
]
UNIT_ERRORS = [
    "{{ missing.attr }}",
    "{{ 'a' + 1 }}",
    "{{ 1 / 0 }}",
    "{{ l|nosuch }}",
    "{{ raise_exception('custom message') }}",
    "{% for x in 5 %}{% endfor %}",
    "{{ n is nosuchtest }}",
    "{% set l.x = 1 %}",
    "{{ 1 < 'a' }}",
    "{{ missing() }}",
    "{{ n() }}",
    "{{ {'a': 1}|tojson(indent=missing) }}{{ missing|tojson }}",
]


def gen_unit(env):
    cases = []
    for src in UNIT:
        try:
            cases.append({"template": src, "expected": env.from_string(src).render(**UNIT_VARS)})
        except Exception as e:
            raise SystemExit(f"{src!r}: {type(e).__name__}: {e}")
    errors = []
    for src in UNIT_ERRORS:
        try:
            env.from_string(src).render(**UNIT_VARS)
            raise SystemExit(f"expected an error from {src!r}")
        except TemplateError as e:
            errors.append({"template": src, "error": str(e)})
        except Exception as e:  # noqa: BLE001 - any jinja2/Python error is what the case wants
            errors.append({"template": src, "error": f"{type(e).__name__}: {e}"})
    doc = {"generator": f"scripts/gen_chat_goldens.py, jinja2 {jinja2.__version__}",
           "vars": UNIT_VARS, "cases": cases, "errors": errors}
    with open(os.path.join(DATA, "unit.cases.json"), "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"unit: {len(cases)} cases, {len(errors)} errors")


def main():
    env = make_env()
    gen_unit(env)
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
