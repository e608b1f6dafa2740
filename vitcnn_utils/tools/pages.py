"""What a chapter notebook needs to put computed numbers into its Markdown, and figures that fit a phone.

A chapter module's ``numbers(results)`` returns ``{key: text}`` (its measured values, formatted, as the verdicts
read them); the notebook calls :func:`glue_numbers` on it, and its Markdown cells insert each value with MyST-NB's
``{glue:text}`key``` role when the book is built. The prose stays in the notebook; the numbers come from the
package, where they are tested.
"""
from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping


def glue_numbers(numbers: Mapping[str, str]) -> None:
    """Record every ``key: text`` for MyST-NB's ``{glue:text}`` role, displaying nothing on the page."""
    from myst_nb import glue            # the book's dependency, not the library's

    for key, text in numbers.items():
        if not isinstance(text, str):
            raise TypeError(f"number {key!r} must be formatted text, got {type(text).__name__}: format it in the "
                            "chapter's numbers()")
        glue(key, text, display=False)


NARROW_MAX_PX = 600   # screens up to this width (CSS px) get a figure's narrow layout


def responsive_figure(wide, narrow, alt: str):
    """One figure in two layouts, as an HTML ``<picture>``: ``wide`` (a Matplotlib figure laid out for the page
    column) and ``narrow`` (the same content laid out for a phone, shown on screens up to
    :data:`NARROW_MAX_PX` px wide). Both PNGs are embedded, so the page needs no image files; ``alt`` describes
    the figure for screen readers. Closes both figures; returns an ``IPython.display.HTML`` to display."""
    import matplotlib.pyplot as plt
    from IPython.display import HTML

    def png(fig) -> str:
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        plt.close(fig)
        return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
    return HTML(f'<picture class="vitcnn-figure"><source media="(max-width: {NARROW_MAX_PX}px)" '
                f'srcset="{png(narrow)}"><img src="{png(wide)}" alt="{html.escape(alt)}"></picture>')
