"""What a chapter notebook needs to put computed numbers into its Markdown.

A chapter module's ``numbers(results)`` returns ``{key: text}`` (its measured values, formatted, as the verdicts
read them); the notebook calls :func:`glue_numbers` on it, and its Markdown cells insert each value with MyST-NB's
``{glue:text}`key``` role when the book is built. The prose stays in the notebook; the numbers come from the
package, where they are tested.
"""
from __future__ import annotations

from collections.abc import Mapping


def glue_numbers(numbers: Mapping[str, str]) -> None:
    """Record every ``key: text`` for MyST-NB's ``{glue:text}`` role, displaying nothing on the page."""
    from myst_nb import glue            # the book's dependency, not the library's

    for key, text in numbers.items():
        if not isinstance(text, str):
            raise TypeError(f"number {key!r} must be formatted text, got {type(text).__name__}: format it in the "
                            "chapter's numbers()")
        glue(key, text, display=False)
