"""Small inline SVG charts for the dashboard: no script, no external file, scale to any width."""

from __future__ import annotations

from html import escape


def bars(labels: list[str], series: dict[str, list[int]], colours: dict[str, str], *,
         title: str) -> str:
    """Grouped vertical bars, one group per label, one bar per series, as a ``<figure>``.

    The bars are an SVG stretched to the figure's width; the highest value and the first and
    last labels are HTML around it, so text keeps its size on a phone. Each bar carries a
    ``<title>`` (its label, series and value) for a tooltip.
    """
    n, k = len(labels), max(1, len(series))
    height, slot = 100.0, 10.0
    width = max(1, n) * slot
    top = max((v for values in series.values() for v in values), default=0)
    bar_w = (slot - 2) / k
    rects = []
    for i, label in enumerate(labels):
        for j, (name, values) in enumerate(series.items()):
            v = values[i]
            h = 0.0 if top == 0 else height * v / top
            x = i * slot + 1 + j * bar_w
            rects.append(
                f'<rect x="{x:.2f}" y="{height - h:.2f}" width="{bar_w:.2f}" height="{h:.2f}" '
                f'fill="{colours[name]}"><title>{escape(label)} {escape(name)}: {v:,}</title>'
                "</rect>")
    first, last = (escape(labels[0]), escape(labels[-1])) if labels else ("", "")
    return (
        f'<figure class="chart"><span class="ymax">{top:,}</span>'
        f'<svg viewBox="0 0 {width:g} {height:g}" role="img" aria-label="{escape(title)}" '
        f'preserveAspectRatio="none">{"".join(rects)}</svg>'
        f'<figcaption><span>{first}</span><span>{last}</span></figcaption></figure>'
    )


def stacked(parts: list[tuple[str, int, str]], *, title: str) -> str:
    """One horizontal bar split into ``(name, value, colour)`` parts; an SVG element."""
    total = sum(v for _, v, _ in parts)
    out = [f'<svg class="stack" viewBox="0 0 1000 24" role="img" aria-label="{escape(title)}" '
           'preserveAspectRatio="none">']
    x = 0.0
    for name, v, colour in parts:
        w = 0.0 if total == 0 else 1000 * v / total
        out.append(f'<rect x="{x:.1f}" y="0" width="{w:.1f}" height="24" fill="{colour}">'
                   f'<title>{escape(name)}: {v:,}</title></rect>')
        x += w
    if total == 0:
        out.append('<rect x="0" y="0" width="1000" height="24" class="empty"/>')
    out.append("</svg>")
    return "".join(out)
