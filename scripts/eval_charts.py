#!/usr/bin/env python3
"""eval_charts.py - tables and SVG charts of bench_eval's JSON (stdlib only, no plotting library).

    python3 scripts/eval_charts.py EVAL.json DOCS_DIR [--command "how it was produced"]

Writes DOCS_DIR/eval-policies.md (tables) and three SVG charts the README shows:
eval-accuracy-budget.svg (passkey accuracy at 1x against the budget), eval-heatmap.svg
(accuracy by context length x needle depth, one panel per policy, skipped lengths marked with
the reason in the tables) and eval-ppl-length.svg (perplexity per trained-length segment as the
context grows, StreamingLLM's figure).
"""
import json
import math
import sys

COLORS = ["#222222", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
          "#e377c2", "#17becf", "#bcbd22"]


def esc(s):
    return str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def svg_open(w, h, title):
    return ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" '
            'viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">' % (w, h, w, h),
            '<rect width="100%" height="100%" fill="white"/>',
            '<text x="%d" y="20" text-anchor="middle" font-size="14" font-weight="bold">%s'
            '</text>' % (w / 2, esc(title))]


def color_of(names):
    return {n: COLORS[i % len(COLORS)] for i, n in enumerate(names)}


def line_chart(path, title, xlabel, ylabel, series, xticks, ylim, logy=False, hlines=()):
    """series: [(name, color, [(x, y)...])]; xticks: [(x, label)]; hlines: [(name, color, y)]."""
    W, H, L, R, T, B = 720, 420, 60, 170, 40, 50
    xs = [x for x, _ in xticks]
    x0, x1 = min(xs), max(xs)
    y0, y1 = ylim
    fy = (lambda v: math.log10(v)) if logy else (lambda v: v)

    def px(x):
        return L + (W - L - R) * ((x - x0) / ((x1 - x0) or 1))

    def py(y):
        y = min(max(y, y0), y1)
        return H - B - (H - T - B) * ((fy(y) - fy(y0)) / ((fy(y1) - fy(y0)) or 1))

    out = svg_open(W, H, title)
    out.append('<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#999"/>'
               % (L, T, W - L - R, H - T - B))
    for x, lab in xticks:
        out.append('<text x="%.1f" y="%d" text-anchor="middle">%s</text>' % (px(x), H - B + 16,
                                                                            esc(lab)))
    ticks = [y0 * 10 ** (i * (math.log10(y1 / y0)) / 4) for i in range(5)] if logy else \
        [y0 + (y1 - y0) * i / 4 for i in range(5)]
    for y in ticks:
        out.append('<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#eee"/>'
                   % (L, W - R, py(y), py(y)))
        out.append('<text x="%d" y="%.1f" text-anchor="end">%s</text>'
                   % (L - 4, py(y) + 4, ("%.0f" % y) if y >= 10 else ("%.2g" % y)))
    out.append('<text x="%d" y="%d" text-anchor="middle">%s</text>'
               % ((L + W - R) / 2, H - 10, esc(xlabel)))
    out.append('<text x="14" y="%d" text-anchor="middle" transform="rotate(-90 14 %d)">%s'
               '</text>' % ((T + H - B) / 2, (T + H - B) / 2, esc(ylabel)))
    legend = []
    for name, col, y in hlines:
        out.append('<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="%s" stroke-dasharray="5,4"'
                   ' stroke-width="1.5"/>' % (L, W - R, py(y), py(y), col))
        legend.append((name + " (no budget)", col, True))
    for name, col, pts in series:
        if not pts:
            continue
        d = " ".join("%s%.1f,%.1f" % ("M" if i == 0 else "L", px(x), py(y))
                     for i, (x, y) in enumerate(pts))
        out.append('<path d="%s" fill="none" stroke="%s" stroke-width="2"/>' % (d, col))
        for x, y in pts:
            out.append('<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>' % (px(x), py(y), col))
        legend.append((name, col, False))
    for i, (name, col, dashed) in enumerate(legend):
        y = T + 10 + 18 * i
        out.append('<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="%s" stroke-width="2"%s/>'
                   % (W - R + 10, W - R + 30, y, y, col,
                      ' stroke-dasharray="5,4"' if dashed else ""))
        out.append('<text x="%d" y="%d">%s</text>' % (W - R + 36, y + 4, esc(name)))
    out.append("</svg>")
    open(path, "w").write("\n".join(out) + "\n")


def heat_color(a):
    """0 -> red, 1 -> green, through yellow."""
    r = int(255 * min(1, 2 * (1 - a)))
    g = int(200 * min(1, 2 * a))
    return "#%02x%02x40" % (r, g)


def heatmap(path, data, names):
    mults = sorted({p["mult"] for p in data["passkey"]})
    bins = max((len(p["by_depth"]) for p in data["passkey"]), default=4)
    cw, ch, pw = 34, 24, 60
    cols = min(4, len(names))
    rows = (len(names) + cols - 1) // cols
    panel_w, panel_h = pw + cw * bins + 20, 40 + ch * len(mults) + 30
    W, H = cols * panel_w + 20, rows * panel_h + 60
    out = svg_open(W, H, "Passkey accuracy by context length x needle depth (defaults)")
    for k, name in enumerate(names):
        ox, oy = 10 + (k % cols) * panel_w, 40 + (k // cols) * panel_h
        out.append('<text x="%d" y="%d" font-weight="bold">%s</text>' % (ox + pw, oy + 12,
                                                                         esc(name)))
        for r, m in enumerate(mults):
            y = oy + 22 + r * ch
            out.append('<text x="%d" y="%d" text-anchor="end">%gx</text>' % (ox + pw - 6, y + 16,
                                                                           m))
            pt = [p for p in data["passkey"] if p["policy"] == name and p["mult"] == m]
            for b in range(bins):
                x = ox + pw + b * cw
                if not pt or pt[0]["skip"] or pt[0]["by_depth"][b][1] == 0:
                    out.append('<rect x="%d" y="%d" width="%d" height="%d" fill="#ddd" '
                               'stroke="white"/>' % (x, y, cw, ch))
                    out.append('<text x="%d" y="%d" text-anchor="middle" fill="#777" '
                               'font-size="10">n/a</text>' % (x + cw / 2, y + 16))
                    continue
                ok, n = pt[0]["by_depth"][b]
                out.append('<rect x="%d" y="%d" width="%d" height="%d" fill="%s" stroke="white">'
                           '<title>%d/%d</title></rect>' % (x, y, cw, ch, heat_color(ok / n),
                                                            ok, n))
                out.append('<text x="%d" y="%d" text-anchor="middle" font-size="10">%d/%d</text>'
                           % (x + cw / 2, y + 16, ok, n))
        out.append('<text x="%d" y="%d" text-anchor="middle" font-size="10">needle depth '
                   'quarter (0 = start)</text>' % (ox + pw + cw * bins / 2,
                                                   oy + 22 + ch * len(mults) + 14))
    out.append("</svg>")
    open(path, "w").write("\n".join(out) + "\n")


def pct(c, t):
    return "%d/%d (%.0f%%)" % (c, t, 100.0 * c / t) if t else "-"


def markdown(path, data, command):
    L = ["# KV-cache policies: measured quality", "",
         "<!-- Generated by scripts/eval.sh (bench/bench_eval + scripts/eval_charts.py); "
         "do not edit by hand. -->", "",
         "Model `%s`, trained context %d tokens; passkey 1x = ~%d-token prompts; held-out "
         "passkey set (seed %d: keys, depths and filler differ from every test case); %d prompts "
         "per point at 1x and 4x, fewer beyond. Regenerate with:" % (
             data["model"], data["n_ctx_train"], data["base"], data["seed"], data["trials"]),
         "", "```", command, "```", "", "## Policies at their defaults for this model", "",
         "| policy | what it keeps | resolved defaults |", "|---|---|---|"]
    for p in data["policies"]:
        L.append("| `%s` | %s | %s |" % (p["name"], p["summary"], p["defaults"] or "none"))
    L += ["", "## Passkey accuracy by budget at 1x", "",
          "![accuracy vs budget](eval-accuracy-budget.svg)", "",
          "| policy | budget (fraction of the prompt) | correct | KV bytes after the first "
          "generated token |", "|---|---|---|---|"]
    for b in data["budget"]:
        L.append("| `%s` | %s | %s | %.0f |" % (b["policy"], ("%g" % b["fraction"]) if
                                               b["fraction"] else "defaults",
                                               pct(b["correct"], b["trials"]), b["kv_bytes"]))
    L += ["", "## Passkey by context length and needle depth (defaults: name only)", "",
          "![heatmap](eval-heatmap.svg)", "",
          "| policy | length | prompt tokens | correct | by depth quarter | KV bytes after the "
          "first generated token | prefill tokens/s |", "|---|---|---|---|---|---|---|"]
    for p in data["passkey"]:
        if p["skip"]:
            L.append("| `%s` | %gx | - | skipped: %s | | | |" % (p["policy"], p["mult"],
                                                             p["skip"]))
            continue
        L.append("| `%s` | %gx | %.0f | %s | %s | %.0f | %.0f |" % (
            p["policy"], p["mult"], p["tokens"], pct(p["correct"], p["trials"]),
            " ".join("%d/%d" % (a, n) for a, n in p["by_depth"]), p["kv_bytes"], p["tok_s"]))
    if data.get("ppl"):
        L += ["", "## Perplexity by context length (defaults)", "",
              "![perplexity vs length](eval-ppl-length.svg)", "",
              "Held-out text streamed through one sequence; PPL of each %d-token segment." %
              data["ppl_segment"], "",
              "| policy | PPL | per segment | KV bytes peak | tokens/s |", "|---|---|---|---|---|"]
        for p in data["ppl"]:
            L.append("| `%s` | %.2f | %s | %d | %.0f |" % (
                p["policy"], p["ppl_all"], " ".join("%.1f" % v for v in p["ppl_seg"]),
                p["bytes_peak"], p["tok_s"]))
    L += ["", "## Agreement with full at an equal budget (budget %d where the policy has one)"
          % data["agree_budget"], "",
          "First %d tokens of the held-out text (inside the trained context, where full is the "
          "reference), streamed in chunks." % data["n_ctx_train"], "",
          "| policy | PPL | top-1 agreement | mean KL(full ‖ policy) | KV bytes peak | "
          "tokens/s |", "|---|---|---|---|---|---|"]
    for p in data["agree"]:
        L.append("| `%s` | %.2f | %.1f%% | %.4f | %d | %.0f |" % (
            p["spec"], p["ppl"], 100 * p["agree"], p["kl"], p["bytes_peak"], p["tok_s"]))
    open(path, "w").write("\n".join(L) + "\n")


def main():
    args = sys.argv[1:]
    command = "scripts/eval.sh"
    if "--command" in args:
        i = args.index("--command")
        command = args[i + 1]
        del args[i:i + 2]
    if len(args) != 2:
        sys.exit("usage: eval_charts.py EVAL.json DOCS_DIR [--command TEXT]")
    data = json.load(open(args[0]))
    out = args[1].rstrip("/")
    names = [p["name"] for p in data["policies"]]
    col = color_of(names)
    fracs = sorted({b["fraction"] for b in data["budget"] if b["fraction"]})
    series, hl = [], []
    for n in names:
        pts = [(b["fraction"], b["correct"] / b["trials"]) for b in data["budget"]
               if b["policy"] == n and b["fraction"] and b["trials"]]
        if pts:
            series.append((n, col[n], sorted(pts)))
        else:
            for b in data["budget"]:
                if b["policy"] == n and b["trials"]:
                    hl.append((n, col[n], b["correct"] / b["trials"]))
    if fracs:
        line_chart(out + "/eval-accuracy-budget.svg",
                   "Passkey accuracy at 1x (~%d tokens) vs KV budget" % data["base"],
                   "budget (KV tokens kept per layer and head, fraction of the prompt)",
                   "passkey accuracy", series, [(f, "%g%%" % (100 * f)) for f in fracs],
                   (0, 1), hlines=hl)
    heatmap(out + "/eval-heatmap.svg", data, names)
    if data.get("ppl"):
        seg = data["ppl_segment"]
        nseg = max(len(p["ppl_seg"]) for p in data["ppl"])
        ps = [(p["policy"], col[p["policy"]],
               [((i + 1) * seg, v) for i, v in enumerate(p["ppl_seg"])]) for p in data["ppl"]]
        vals = [v for p in data["ppl"] for v in p["ppl_seg"]]
        line_chart(out + "/eval-ppl-length.svg",
                   "Perplexity by position in the context (segments of %d tokens)" % seg,
                   "tokens into the context (end of segment)", "perplexity (log scale)", ps,
                   [((i + 1) * seg, "%d" % ((i + 1) * seg)) for i in range(0, nseg,
                                                                         max(1, nseg // 8))],
                   (max(1, min(vals) * 0.8), max(vals) * 1.2), logy=True)
    markdown(out + "/eval-policies.md", data, command)


if __name__ == "__main__":
    main()
