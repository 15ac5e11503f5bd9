#!/usr/bin/env python3
"""Turns a terminal capture with colours (`tmux capture-pane -e -p`) into an SVG image,
so the README can show the dashboard as a terminal draws it (the Inspect tab's maps are
colour only). A developer tool; standard library only.

    tmux capture-pane -t SESSION -e -p > capture.ansi
    python3 scripts/ansi_to_svg.py capture.ansi > docs/inspect-tab.svg

Half blocks (▀ ▄) are drawn as two rectangles so the maps stay crisp at any zoom.
"""
import html
import re
import sys

CELL_W, CELL_H, FONT = 8.4, 17.0, 14
DEFAULT_FG, DEFAULT_BG = (220, 220, 220), (24, 24, 27)
BASIC = [
    (0, 0, 0), (205, 49, 49), (13, 188, 121), (229, 229, 16),
    (36, 114, 200), (188, 63, 188), (17, 168, 205), (229, 229, 229),
    (102, 102, 102), (241, 76, 76), (35, 209, 139), (245, 245, 67),
    (59, 142, 234), (214, 112, 214), (41, 184, 219), (255, 255, 255),
]


def xterm(n):
    if n < 16:
        return BASIC[n]
    if n < 232:
        n -= 16
        steps = [0, 95, 135, 175, 215, 255]
        return (steps[n // 36], steps[(n // 6) % 6], steps[n % 6])
    v = 8 + 10 * (n - 232)
    return (v, v, v)


class Pen:
    def __init__(self):
        self.reset()

    def reset(self):
        self.fg, self.bg, self.bold, self.reverse = None, None, False, False

    def apply(self, params):
        p = [int(x) if x else 0 for x in params.split(";")] if params else [0]
        i = 0
        while i < len(p):
            c = p[i]
            if c == 0:
                self.reset()
            elif c == 1:
                self.bold = True
            elif c == 22:
                self.bold = False
            elif c == 7:
                self.reverse = True
            elif c == 27:
                self.reverse = False
            elif 30 <= c <= 37:
                self.fg = BASIC[c - 30]
            elif 90 <= c <= 97:
                self.fg = BASIC[c - 90 + 8]
            elif 40 <= c <= 47:
                self.bg = BASIC[c - 40]
            elif 100 <= c <= 107:
                self.bg = BASIC[c - 100 + 8]
            elif c == 39:
                self.fg = None
            elif c == 49:
                self.bg = None
            elif c in (38, 48) and i + 1 < len(p):
                if p[i + 1] == 5 and i + 2 < len(p):
                    colour, i = xterm(p[i + 2]), i + 2
                elif p[i + 1] == 2 and i + 4 < len(p):
                    colour, i = tuple(p[i + 2:i + 5]), i + 4
                else:
                    colour = None
                if c == 38:
                    self.fg = colour
                else:
                    self.bg = colour
            i += 1

    def colours(self):
        fg, bg = self.fg or DEFAULT_FG, self.bg or DEFAULT_BG
        return (bg, fg) if self.reverse else (fg, bg)


def cells(text):
    """Rows of (char, fg, bg, bold)."""
    pen, rows = Pen(), []
    for line in text.split("\n"):
        row = []
        for part in re.split(r"(\x1b\[[0-9;]*m)", line):
            m = re.fullmatch(r"\x1b\[([0-9;]*)m", part)
            if m:
                pen.apply(m.group(1))
                continue
            for ch in part:
                fg, bg = pen.colours()
                row.append((ch, fg, bg, pen.bold))
        rows.append(row)
    while rows and not rows[-1]:
        rows.pop()
    return rows


def rgb(c):
    return "#%02x%02x%02x" % c


def runs(row, key):
    """(start, end, items) of consecutive cells with the same key."""
    out, start = [], 0
    for x in range(1, len(row) + 1):
        if x == len(row) or key(row[x]) != key(row[start]):
            out.append((start, x, row[start:x]))
            start = x
    return out


def svg(rows):
    width = max(len(r) for r in rows) * CELL_W
    height = len(rows) * CELL_H
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.1f} {height:.1f}" font-family="DejaVu Sans Mono, Menlo, Consolas, monospace" '
        f'font-size="{FONT}" xml:space="preserve">',
        f'<rect width="100%" height="100%" fill="{rgb(DEFAULT_BG)}"/>',
    ]

    def rect(x0, x1, top, h, colour):
        out.append(f'<rect x="{x0 * CELL_W:.1f}" y="{top:.1f}" width="{(x1 - x0) * CELL_W + 0.1:.1f}" '
                   f'height="{h + 0.1:.1f}" fill="{rgb(colour)}"/>')

    for y, row in enumerate(rows):
        top = y * CELL_H
        # Backgrounds: upper and lower halves (a half block's two colours).
        halves = []
        for ch, fg, bg, _ in row:
            if ch == "▀":
                halves.append((fg, bg))
            elif ch == "▄":
                halves.append((bg, fg))
            else:
                halves.append((bg, bg))
        for x0, x1, items in runs(halves, lambda h: h):
            upper, lower = items[0]
            if upper == lower:
                if upper != DEFAULT_BG:
                    rect(x0, x1, top, CELL_H, upper)
            else:
                rect(x0, x1, top, CELL_H / 2, upper)
                rect(x0, x1, top + CELL_H / 2, CELL_H / 2, lower)
        # Text: runs of one colour and weight, stretched to the cells they cover.
        glyphs = [(" " if ch in "▀▄" else ch, fg, bold) for ch, fg, _, bold in row]
        for x0, x1, items in runs(glyphs, lambda g: (g[1], g[2])):
            text = "".join(g[0] for g in items)
            if not text.strip():
                continue
            weight = ' font-weight="bold"' if items[0][2] else ""
            out.append(f'<text x="{x0 * CELL_W:.1f}" y="{top + CELL_H * 0.78:.1f}" fill="{rgb(items[0][1])}"'
                       f' textLength="{(x1 - x0) * CELL_W:.1f}" lengthAdjust="spacingAndGlyphs"{weight}>'
                       f'{html.escape(text)}</text>')
    out.append("</svg>")
    return "\n".join(out)


if __name__ == "__main__":
    source = open(sys.argv[1], encoding="utf-8").read() if len(sys.argv) > 1 else sys.stdin.read()
    print(svg(cells(source)))
