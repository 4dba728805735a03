#!/usr/bin/env python3
"""gen_jinja_cases.py - renders the Jinja unit-test cases with Python's Jinja2 (the reference
implementation, configured as Hugging Face configures it: trim_blocks, lstrip_blocks, loop
controls, tojson with ensure_ascii off) and writes tests/unit/jinja_cases.h, the table
tests/unit/test_jinja.c checks our engine against. Tests never run Python; rerun this when the
cases change:  python3 scripts/gen_jinja_cases.py
"""
import json
import os
import time

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

NOW = 1764680400  # 2025-12-02 13:00:00 UTC: what strftime_now() sees in the test

CTX = {
    "messages": [{"role": "system", "content": "Be brief."},
                 {"role": "user", "content": " Hi "},
                 {"role": "assistant", "content": "Hello", "tool_calls": None}],
    "name": "World", "n": 3, "f": 2.5, "flag": True, "none_v": None,
    "d": {"b": 1, "a": [1, 2]},
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {"x": 1}}}],
}

CASES = [
    "{{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ 2 ** 3 ** 2 }} {{ -2 ** 2 }}",
    "{{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 2 ** 10 }} {{ n - 5 }}",
    "{{ 'a' ~ 1 ~ none ~ 2.0 }}|{{ name + '!' }}|{{ 'ab' * 3 }}|{{ [1] + [2, 3] }}",
    "{{ n > 2 and n < 5 }} {{ not flag }} {{ none_v or 'x' }} {{ 0 and 1 }} {{ 1 == 1.0 }} {{ 'a' < 'b' }}",
    "{{ 'yes' if flag else 'no' }}[{{ 'a' if none_v }}]{{ 1 if 0 else 2 if 0 else 3 }}",
    "{{ messages[0].role }} {{ messages[-1]['content'] }} {{ messages[5] is defined }} {{ messages[0].nope is defined }}",
    "{{ [1,2,3][::-1] }} {{ 'hello'[1:3] }} {{ 'hello'[::-1] }} {{ [1,2,3,4][1:] }} {{ 'abc'[-1] }} {{ [1,2,3,4,5][::2] }} {{ 'hello'[:-1] }}",
    "{{ 'b' in d }} {{ 'ell' in 'hello' }} {{ 3 not in [1,2] }} {{ 'x' in 'abc' }} {{ 1 in [1] }}",
    "{{ {'k': 'v', 'n': 1} }} {{ [1, 'a', none, true, 2.5] }} {{ [\"it's\", 'say \"hi\"'] }} {{ d }}",
    "{{ 1.0 }} {{ 0.1 + 0.2 }} {{ 1e20 }} {{ 1.5e-7 }} {{ 3 / 3 }} {{ 100.0 / 3 }} {{ 1e16 }} {{ 0.0001 }}",
    "{{ 'a' 'b' }} {{ 'tab\\there' }} {{ \"dq\\\"x\" }}",
    "{{ 'héllo'[1] }}{{ 'héllo'[1:3] }} {{ 'héllo' | length }} {{ 'héllo'[::-1] }}",
    "{{ '  x  ' | trim }}|{{ 'abc' | upper }}|{{ 'ABC' | lower }}|{{ 'hello world' | title }}|{{ 'hello World' | capitalize }}|{{ 'xxyxx' | trim('x') }}",
    "{{ messages | length }} {{ d | length }} {{ '' | length }} {{ [] | length }}",
    "{{ d | tojson }} {{ d | tojson(indent=2) }} {{ d | tojson(sort_keys=true) }} {{ 'é\"\\n<&>' | tojson }} {{ [] | tojson(indent=2) }} {{ {} | tojson }}",
    "{{ [1.5, none, true, 'x', {'a': []}] | tojson }} {{ tools[0].function | tojson(indent=4) }}",
    "{% for k, v in d | items %}{{ k }}={{ v }};{% endfor %}{% for k, v in d.items() %}{{ k }};{% endfor %}{% for k in d %}{{ k }}{% endfor %}",
    "{{ undefined_var | default('dflt') }} {{ '' | default('e', true) }} {{ name | d('x') }} {{ none_v | default('z') }}",
    "{{ [1,2,3] | join(', ') }} {{ messages | map(attribute='role') | join('/') }} {{ ['a','b'] | join }}",
    "{{ [3,1,2] | first }} {{ [3,1,2] | last }} {{ [3,1,2] | sort | list }} {{ [1,1,2] | unique | list }} {{ [1,2] | reverse | list }} {{ 'abc' | list }}",
    "{{ 'aXbXc' | replace('X', '-') }} {{ 42 | string }} {{ '12' | int + 1 }} {{ 'x' | int }} {{ 3.9 | int }} {{ -3 | abs }}",
    "{{ messages | selectattr('role', 'equalto', 'user') | list | length }} {{ messages | rejectattr('role', 'equalto', 'user') | map(attribute='content') | first }} {{ messages | selectattr('tool_calls') | list | length }}",
    "{{ [1,2,3,4] | select('even') | list }} {{ [1,2,3,4] | reject('odd') | list }} {{ [1,2,3] | sum }} {{ [3,1,2] | max }} {{ [3,1,2] | min }} {{ ['a','B'] | map('upper') | list }}",
    "{{ name is string }} {{ d is mapping }} {{ messages is iterable }} {{ n is number }} {{ none_v is none }} {{ nope is defined }} {{ n is not none }} {{ flag is true }} {{ 4 is divisibleby 2 }} {{ 3 is odd }} {{ name is equalto 'World' }} {{ 'x' is sequence }} {{ f is float }} {{ n is integer }} {{ flag is boolean }} {{ 1 is false }}",
    "{% if n == 1 %}one{% elif n == 3 %}three{% else %}other{% endif %}|{% if not none_v %}nv{% endif %}",
    "{% for m in messages %}{{ loop.index }}/{{ loop.length }}:{{ loop.index0 }}{{ loop.first }}{{ loop.last }}{{ loop.revindex }} {% endfor %}",
    "{% for x in [1,2,3,4] if x is even %}{{ loop.index }}{{ x }}{{ loop.last }} {% endfor %}",
    "{% for x in [] %}a{% else %}empty{% endfor %}{% for x in [1,2,3,4,5] %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 4 %}{% break %}{% endif %}{{ x }}{% endfor %}",
    "{% for x in [1,2,3] %}{{ loop.previtem is defined }}{{ loop.nextitem | default('-') }}{% endfor %}",
    "{% set x = 1 %}{% for i in [1,2] %}{% set x = i %}{{ x }}{% endfor %}{{ x }}{% if true %}{% set x = 5 %}{% endif %}{{ x }}",
    "{% set ns = namespace(c=0, s='') %}{% for i in [1,2,3] %}{% set ns.c = ns.c + i %}{% set ns.s = ns.s ~ i %}{% endfor %}{{ ns.c }} {{ ns.s }}",
    "{% set b %}x{{ n }}y{% endset %}[{{ b }}]{% set messages = messages[1:] %}{{ messages | length }}",
    "{% macro greet(who, p='Hi') %}{{ p }} {{ who }}{% endmacro %}{{ greet('A') }},{{ greet('B', p='Yo') }},{{ greet(who='C') }}",
    "{% macro wrap(t) %}<{{ t }}:{{ caller() }}>{% endmacro %}{% call wrap('w') %}in {{ n }}{% endcall %}",
    "{{ ' a b '.strip() }}|{{ 'a,b,,c'.split(',') }}|{{ 'a b  c '.split() }}|{{ 'xxhixx'.lstrip('x') }}|{{ 'xxhixx'.rstrip('x') }}|{{ 'hello'.startswith('he') }}|{{ 'hello'.endswith(('lo','x')) }}|{{ 'a-b-c'.replace('-', '+') }}|{{ 'hi there'.title() }}|{{ 'abc'.upper() }}|{{ 'a1b1'.split('1', 1) }}",
    "{{ d.get('b') }} {{ d.get('z', 'no') }} {{ d.get('z') }} {{ d.keys() | list }} {{ d.values() | list | length }} {{ d['a'][1] }} {{ d.a[0] }}",
    "a\n  {% if true %}\n  b\n  {% endif %}\nc",
    "a {{- ' b ' -}} c|x\n{%- if true -%}\n y \n{%- endif %}\nz",
    "{# comment #}\nq\n  {#- c2 -#}  r",
    "  {%+ if true %}k{% endif %}\n  {% if true %}m{% endif %}\n",
    "{% for i in range(3) %}\n  - {{ i }}\n{% endfor %}\ndone",
    "{{ range(3) | list }} {{ range(1, 7, 2) | list }} {{ range(5, 0, -2) | list }}",
    "{{ strftime_now('%Y-%m-%d %H:%M') }} {{ strftime_now('%d %b %Y') }}",
    "{{ messages[0]['role'] == 'system' and messages[1].content | trim == 'Hi' }}",
    "{% set out = tools[0]['function'] | tojson %}{{ out[:-1] }}, \"id\": 1}",
    "{% for m in messages[::-1] %}{{ m.role[0] }}{% endfor %}{{ (messages | length - 1) - 1 }}",
    "{{ '<|im_start|>' + messages[0].role + '\\n' + messages[0].content + '<|im_end|>' + '\\n' }}",
    "{% filter upper %}shout {{ name }}{% endfilter %}",
    "{{ 'a' if 'x' in 'xyz' and not 'q' in 'xyz' else 'b' }} {{ (1, 2) }} {{ () }}",
]

ERRORS = [
    ("{{ raise_exception('boom here') }}", "boom here"),
    ("{{ nope.attr }}", "undefined"),
    ("{{ 1 + 'a' }}", "unsupported operand"),
    ("{{ name | nofilter }}", "unknown filter 'nofilter'"),
    ("{{ 1 / 0 }}", "division by zero"),
    ("{{ 1 is nosuchtest }}", "unknown test"),
    ("{{ 5() }}", "not callable"),
    ("{% set x = 3 %}{% set x.y = 1 %}", "not a namespace"),
    ("{% macro r() %}{{ r() }}{% endmacro %}{{ r() }}", "nested too deeply"),
    ("{% for a, b in [1, 2] %}{% endfor %}", "cannot unpack"),
    ("{{ 'a' < 1 }}", "cannot order"),
]

PARSE_ERRORS = [
    ("{% if x %}no end", "endif"),
    ("{{ 1 + }}", "expected an expression"),
    ("{% for %}", "a variable name"),
    ("{{ 'unterminated }}", "unterminated string"),
    ("{% bogus %}", "a known statement"),
    ("line1\nline2 {{ ) }}", "line 2"),
    ("{{ 'a\\n\\nb' }}\n{{ ) }}", "line 2"),  # escapes in strings are not lines
    ("{{ a.}}", "an attribute name"),
    ("{% for x in y %}{% endif %}", "endfor"),
    ("{# never closed", "unterminated comment"),
    ("{{ x", "unterminated tag"),
    ("{{ x $ y }}", "unexpected character"),
]


def make_env():
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=["jinja2.ext.loopcontrols"])

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    def raise_exception(msg):
        raise jinja2.exceptions.TemplateError(msg)

    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: time.strftime(fmt, time.gmtime(NOW))
    return env


def c_str(s):
    out = []
    for b in s.encode("utf-8"):
        ch = chr(b)
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif 32 <= b < 127:
            out.append(ch)
        else:
            out.append("\\%03o" % b)
    return '"' + "".join(out) + '"'


def main():
    env = make_env()
    lines = ["/* jinja_cases.h - generated by scripts/gen_jinja_cases.py from Python Jinja2 "
             + jinja2.__version__ + " (trim_blocks, lstrip_blocks); do not edit. */",
             "static const char *const jj_ctx_json = " + c_str(json.dumps(CTX)) + ";",
             "static const long jj_now = %d;" % NOW,
             "static const struct { const char *tmpl, *want; } jj_cases[] = {"]
    for t in CASES:
        got = env.from_string(t).render(**CTX)
        lines.append("    {%s,\n     %s}," % (c_str(t), c_str(got)))
    lines.append("};")
    lines.append("static const struct { const char *tmpl, *msg; } jj_errors[] = {")
    for t, msg in ERRORS:
        try:
            env.from_string(t).render(**CTX)
            raise SystemExit("expected an error from: " + t)
        except jinja2.exceptions.TemplateError:
            pass
        except (TypeError, ZeroDivisionError, RecursionError, ValueError):
            pass
        lines.append("    {%s, %s}," % (c_str(t), c_str(msg)))
    lines.append("};")
    lines.append("static const struct { const char *tmpl, *msg; } jj_parse_errors[] = {")
    for t, msg in PARSE_ERRORS:
        try:
            env.from_string(t)
            raise SystemExit("expected a syntax error from: " + t)
        except jinja2.exceptions.TemplateSyntaxError:
            pass
        lines.append("    {%s, %s}," % (c_str(t), c_str(msg)))
    lines.append("};")
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "unit",
                        "jinja_cases.h")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"{len(CASES)} cases, {len(ERRORS)} errors, {len(PARSE_ERRORS)} parse errors")


if __name__ == "__main__":
    main()
