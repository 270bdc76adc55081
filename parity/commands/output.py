"""Small helpers of the command layer: option lists, choices, plain-text tables."""

from __future__ import annotations

from parity.errors import UsageError


def split_names(text: str | None) -> list[str] | None:
    """'a, b,c' -> ['a', 'b', 'c']; None stays None."""
    if text is None:
        return None
    return [t.strip() for t in text.split(",") if t.strip()]


def check_choices(option: str, given: list[str] | None, known: tuple[str, ...] | list[str], what: str) -> None:
    """Raise UsageError naming the option and every value of `given` that is not in `known`."""
    unknown = [g for g in given or () if g not in known]
    if unknown:
        raise UsageError(f"{option}: unknown {what}(s) {', '.join(unknown)}; choose from {', '.join(known)}")


def table(header: tuple[str, ...] | list[str], rows: list) -> str:
    """A plain-text table with columns padded to their widest cell."""
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(header, widths)).rstrip(), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)
