#!/usr/bin/env python3
"""check_layers.py - fails when a layer reaches upward or two files depend on each other.

kvserve's sources sit in layers (docs/DESIGN.md):

    core  <-  text, kvcache  <-  engine  <-  server, cli  <-  main.c

A file may include or call files of its own layer and of the layers listed for it in ALLOWED;
nothing else. text and kvcache do not depend on each other; server and cli never on each
other. Public headers under include/kvserve/ belong to the layer named in PUBLIC_HEADERS (a
new public header must be added there, or the check fails). bench/ and tests/ are programs on
top: they may include anything by its path from the root, but never with "../".

Edges come from two sources, and both are checked against the layer rules:
  - includes: every `#include "..."` between files of the tree (resolved like the compiler:
    the including file's folder, then include/, then the root);
  - calls: for each object of the layer libraries and programs (from the build's
    compile_commands.json), `nm` lists the symbols it defines and the ones it uses; file A
    calls file B when A uses a global symbol B defines.
Cycles are looked for between modules, a module being x.c with its x.h: any loop of include
and call edges (a.c calls b.c and b.h includes a.h, or a -> b -> c -> a) fails and is printed
as the file edges that close it.

Usage: check_layers.py [--src DIR] [--build DIR]   check a tree (and its built objects)
       check_layers.py --self-test                  run the check on synthetic bad trees
Exit status 0 when clean, 1 with one line per violation otherwise. Python 3 stdlib + nm.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

LAYERS = ['core', 'text', 'kvcache', 'engine', 'server', 'cli', 'main']
ALLOWED = {
    'core': set(),
    'text': {'core'},
    'kvcache': {'core'},
    'engine': {'core', 'text', 'kvcache'},
    'server': {'core', 'text', 'kvcache', 'engine'},
    'cli': {'core', 'text', 'kvcache', 'engine'},
    'main': {'core', 'text', 'kvcache', 'engine', 'server', 'cli'},
}
PUBLIC_HEADERS = {
    'base.h': 'core', 'gguf.h': 'core', 'quant.h': 'core', 'rope.h': 'core',
    'attention.h': 'core', 'args.h': 'core', 'kvtype.h': 'core',
    'tokenizer.h': 'text', 'jinja.h': 'text',
    'kvcache.h': 'kvcache', 'policy_config.h': 'kvcache', 'policy_args.h': 'kvcache',
    'spill.h': 'kvcache', 'kv_view.h': 'kvcache', 'persist.h': 'kvcache',
    'head_profile.h': 'kvcache',
    'model.h': 'engine', 'sampler.h': 'engine', 'engine.h': 'engine', 'grammar.h': 'engine',
}
PROGRAM_DIRS = ('bench', 'tests')  # programs on top of every layer
SKIP_DIRS = {'.git', 'build', 'docs', 'configs', 'docker', 'models', 'scripts', '.ci'}
INCLUDE_RE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def layer_of(rel):
    """The layer of a file (path relative to the root), 'program' or None (not layered)."""
    parts = rel.split('/')
    if parts[0] == 'include' and len(parts) == 3 and parts[1] == 'kvserve':
        return PUBLIC_HEADERS.get(parts[2], '?public')
    if parts[0] in PROGRAM_DIRS:
        return 'program'
    if len(parts) == 1 and parts[0] == 'main.c':
        return 'main'
    if parts[0] in LAYERS:
        return parts[0]
    return None


def source_files(root):
    out = []
    for d, dirs, files in os.walk(root):
        rel_d = os.path.relpath(d, root)
        dirs[:] = sorted(x for x in dirs
                         if not (rel_d == '.' and (x in SKIP_DIRS or x.startswith('build')))
                         and x != 'node_modules')  # npm packages of tests/js
        for f in sorted(files):
            if f.endswith(('.c', '.h')):
                out.append(os.path.normpath(os.path.join(rel_d, f)))
    return out


def resolve_include(root, rel, name):
    for base in (os.path.dirname(rel), 'include', '.'):
        cand = os.path.normpath(os.path.join(base, name))
        if os.path.isfile(os.path.join(root, cand)):
            return cand
    return None


def include_edges(root, files, errors):
    edges = {}
    for rel in files:
        with open(os.path.join(root, rel), encoding='utf-8', errors='replace') as f:
            text = f.read()
        for name in INCLUDE_RE.findall(text):
            if '..' in name.split('/'):
                errors.append(f'{rel}: #include "{name}" climbs with "..": include by the path '
                              'from the root or a public <kvserve/...> header')
            dst = resolve_include(root, rel, name)
            if dst is None:
                errors.append(f'{rel}: #include "{name}" does not resolve to a file of the tree')
                continue
            edges.setdefault(rel, set()).add(dst)
    return edges


def check_layer_edge(kind, src, dst, errors):
    ls, ld = layer_of(src), layer_of(dst)
    for rel, layer in ((src, ls), (dst, ld)):
        if layer == '?public':
            errors.append(f'{rel}: public header with no layer: add it to PUBLIC_HEADERS in '
                          'scripts/check_layers.py')
            return
    if ls is None or ld is None or ls == 'program' or ls == ld:
        return
    if ld == 'program':
        errors.append(f'{kind}: {src} ({ls}) -> {dst}: a library reaches into {dst.split("/")[0]}/')
    elif ld not in ALLOWED[ls]:
        errors.append(f'{kind}: {src} ({ls}) -> {dst} ({ld}): {ls} may depend on '
                      f'{", ".join(sorted(ALLOWED[ls])) or "nothing"} only')


def find_cycles(edges):
    """Tarjan's SCCs; returns one cycle (list of nodes, closed) per non-trivial SCC."""
    index, low, on, stack, sccs, counter = {}, {}, set(), [], [], [0]
    nodes = sorted(set(edges) | {d for v in edges.values() for d in v})

    def strong(v):
        work = [(v, iter(sorted(edges.get(v, ()))))]
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        while work:
            node, it = work[-1]
            nxt = next(it, None)
            if nxt is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == node:
                            break
                    sccs.append(comp)
            elif nxt not in index:
                index[nxt] = low[nxt] = counter[0]
                counter[0] += 1
                stack.append(nxt)
                on.add(nxt)
                work.append((nxt, iter(sorted(edges.get(nxt, ())))))
            elif nxt in on:
                low[node] = min(low[node], index[nxt])

    for v in nodes:
        if v not in index:
            strong(v)
    cycles = []
    for comp in sccs:
        members = set(comp)
        if len(comp) == 1 and comp[0] not in edges.get(comp[0], ()):
            continue
        start = min(comp)  # shortest path back to start inside the component (BFS)
        prev, frontier, found = {start: None}, [start], None
        while frontier and found is None:
            nxt_frontier = []
            for u in frontier:
                for w in sorted(edges.get(u, ())):
                    if w == start:
                        found = u
                        break
                    if w in members and w not in prev:
                        prev[w] = u
                        nxt_frontier.append(w)
                if found is not None:
                    break
            frontier = nxt_frontier
        path, u = [start], found
        while u is not None and u != start:
            path.insert(1, u)
            u = prev[u]
        cycles.append(path + [start])
    return cycles


def module_cycles(inc, calls):
    """Cycles between modules: a module is a .c file and the .h of the same name (x.c + x.h),
    so "a.c calls b.c while b.h includes a.h" is a cycle too. Each cycle is returned as the
    concrete file edges that close it ("a.c calls b.c", "b.h includes a.h")."""
    def mod(path):
        return os.path.splitext(path)[0]
    medges, why = {}, {}
    for kind, graph in (('includes', inc), ('calls', calls)):
        for src, dsts in graph.items():
            for dst in dsts:
                ms, md = mod(src), mod(dst)
                if ms != md:
                    medges.setdefault(ms, set()).add(md)
                    why.setdefault((ms, md), f'{src} {kind} {dst}')
    out = []
    for cyc in find_cycles(medges):
        out.append([why[(cyc[i], cyc[i + 1])] for i in range(len(cyc) - 1)])
    return out


def nm_symbols(objs):
    """{object: (defined, used)} from one `nm` run over all the objects (one process per file
    took most of the check's time on a loaded machine)."""
    out = subprocess.run(['nm', '-P', '-A'] + list(objs), capture_output=True, text=True,
                         check=True).stdout
    syms = {obj: (set(), set()) for obj in objs}
    for line in out.splitlines():
        obj, sep, rest = line.partition(': ')
        f = rest.split()
        if not sep or obj not in syms or len(f) < 2:
            continue
        defined, used = syms[obj]
        if f[1] == 'U':
            used.add(f[0])
        elif f[1] in 'TDBRVWCGSI':  # global definitions; static ones cannot be called
            defined.add(f[0])
    return syms


def call_edges(root, build, errors):
    """File-to-file call edges from the objects of the layer libraries and programs."""
    with open(os.path.join(build, 'compile_commands.json'), encoding='utf-8') as f:
        entries = json.load(f)
    lib_objs, prog_objs = {}, {}
    for e in entries:
        src = os.path.normpath(os.path.join(e['directory'], e['file']))
        rel = os.path.relpath(src, root)
        if rel.startswith('..') or layer_of(rel) is None:
            continue
        obj = os.path.join(e['directory'], e['output'])
        in_lib = '.a.p' + os.sep in e['output'] and layer_of(rel) != 'program'
        if not os.path.isfile(obj):
            if in_lib:  # a program not built yet only hides its own (downward) calls
                errors.append(f'{rel}: object {obj} is not built; build before checking')
            continue
        (lib_objs if in_lib else prog_objs).setdefault(rel, obj)
    objs = sorted(set(lib_objs.values()) | set(prog_objs.values()))
    table = nm_symbols(objs) if objs else {}
    owner = {}
    syms = {}
    for rel, obj in sorted(lib_objs.items()):
        d, u = table[obj]
        syms[rel] = u
        for s in d:
            owner.setdefault(s, rel)
    for rel, obj in sorted(prog_objs.items()):
        if rel not in syms:
            syms[rel] = table[obj][1]
    edges = {}
    for rel, used in syms.items():
        for s in used:
            dst = owner.get(s)
            if dst and dst != rel:
                edges.setdefault(rel, set()).add(dst)
    if not lib_objs:
        errors.append(f'{build}: no library objects found in compile_commands.json')
    return edges


def check_tree(root, build):
    errors = []
    files = source_files(root)
    if not files:
        return [f'{root}: no C sources found']
    inc = include_edges(root, files, errors)
    for src, dsts in sorted(inc.items()):
        for dst in sorted(dsts):
            check_layer_edge('include', src, dst, errors)
    calls = {}
    if build:
        calls = call_edges(root, build, errors)
        for src, dsts in sorted(calls.items()):
            for dst in sorted(dsts):
                check_layer_edge('call', src, dst, errors)
    for cyc in module_cycles(inc, calls):
        errors.append('cycle: ' + '; '.join(cyc))
    return errors


# ---- self-test: synthetic trees the check must reject (and one it must accept) ----

def write(root, rel, text):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w', encoding='utf-8') as f:
        f.write(text)


def build_objects(root, build, srcs):
    """Compiles srcs (relative to root) into build/lib<layer>.a.p/ with a compile_commands."""
    os.makedirs(build, exist_ok=True)
    entries = []
    for rel in srcs:
        out = os.path.join('lib' + rel.split('/')[0] + '.a.p', rel.replace('/', '_') + '.o')
        os.makedirs(os.path.join(build, os.path.dirname(out)), exist_ok=True)
        subprocess.run(['cc', '-c', '-I', os.path.join(root, 'include'), '-I', root,
                        os.path.join(root, rel), '-o', os.path.join(build, out)], check=True)
        entries.append({'directory': build, 'file': os.path.relpath(os.path.join(root, rel), build),
                        'output': out})
    with open(os.path.join(build, 'compile_commands.json'), 'w', encoding='utf-8') as f:
        json.dump(entries, f)


def self_test():
    cases = [
        ('clean tree', {
            'include/kvserve/base.h': '#pragma once\nint ks_one(void);\n',
            'core/base.c': '#include "kvserve/base.h"\nint ks_one(void) { return 1; }\n',
            'kvcache/pool.c': '#include "kvserve/base.h"\nint kv_two(void) { return ks_one() + 1; }\n',
        }, None),
        ('include cycle', {
            'core/a.h': '#include "b.h"\n', 'core/b.h': '#include "a.h"\n',
        }, 'cycle: core/a.h includes core/b.h; core/b.h includes core/a.h'),
        ('upward include', {
            'kvcache/pool.h': 'int kv_two(void);\n',
            'core/base.c': '#include "kvcache/pool.h"\n',
        }, 'include: core/base.c (core) -> kvcache/pool.h (kvcache)'),
        ('sideways include', {
            'server/http.h': 'int http_x(void);\n', 'cli/run.c': '#include "server/http.h"\n',
        }, 'include: cli/run.c (cli) -> server/http.h (server)'),
        ('climbing include', {
            'server/cli_util.h': '\n', 'bench/b.c': '#include "../server/cli_util.h"\n',
        }, 'climbs with ".."'),
        ('unlisted public header', {
            'include/kvserve/http.h': '\n', 'server/http.c': '#include "kvserve/http.h"\n',
        }, 'public header with no layer'),
        ('call cycle', {
            'core/a.c': 'int b(void);\nint a(int n) { return n ? b() : 0; }\n',
            'core/b.c': 'int a(int);\nint b(void) { return a(0); }\n',
        }, 'cycle: core/a.c calls core/b.c; core/b.c calls core/a.c'),
        ('module cycle (call one way, include back)', {
            'core/a.h': 'int a(void);\n', 'core/a.c': 'int b(void);\nint a(void) { return b(); }\n',
            'core/b.h': '#include "a.h"\n', 'core/b.c': 'int b(void) { return 2; }\n',
        }, 'cycle: core/a.c calls core/b.c; core/b.h includes core/a.h'),
        ('three-file cycle', {
            'text/x.c': 'int y(void);\nint x(void) { return y(); }\n',
            'text/y.c': 'int z(void);\nint y(void) { return z(); }\n',
            'text/z.c': 'int x(void);\nint z(void) { return x(); }\n',
        }, 'cycle: text/x.c calls text/y.c; text/y.c calls text/z.c; text/z.c calls text/x.c'),
        ('upward call', {
            'core/a.c': 'int kv_two(void);\nint a(void) { return kv_two(); }\n',
            'kvcache/pool.c': 'int kv_two(void) { return 2; }\n',
        }, 'call: core/a.c (core) -> kvcache/pool.c (kvcache)'),
    ]
    failures = 0
    for name, tree, expect in cases:
        with tempfile.TemporaryDirectory(prefix='check_layers_') as tmp:
            root, build = os.path.join(tmp, 'src'), os.path.join(tmp, 'objs')
            for rel, text in tree.items():
                write(root, rel, text)
            build_objects(root, build, [r for r in tree if r.endswith('.c')])
            errors = check_tree(root, build)
        if expect is None:
            ok = not errors
        else:
            ok = any(expect in e for e in errors)
        print(f'self-test {name}: {"ok" if ok else "FAILED"}'
              + ('' if ok else f' (expected {expect!r}, got {errors})'))
        failures += not ok
    return failures


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument('--src', default=here, help='source tree (default: this repository)')
    ap.add_argument('--build', help='build directory with compile_commands.json and objects')
    ap.add_argument('--self-test', action='store_true', help='check synthetic bad trees')
    a = ap.parse_args()
    if a.self_test:
        return 1 if self_test() else 0
    errors = check_tree(os.path.abspath(a.src), a.build and os.path.abspath(a.build))
    for e in errors:
        print(e)
    n_files = len(source_files(a.src))
    print(f'check_layers: {n_files} files, {len(errors)} violation(s)'
          + ('' if a.build else ' (includes only: no --build given)'))
    return 1 if errors else 0


if __name__ == '__main__':
    sys.exit(main())
