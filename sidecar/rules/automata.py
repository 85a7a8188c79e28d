"""Path languages as small deterministic automata, for the rule analysis (``rules/analysis.py``).

Rules match *normalised* paths (``proxy/paths.py``), which use a finite alphabet: the RFC 3986
path characters plus ``%``. Over that alphabet every glob is a regular language, so overlap and
containment between globs are decided exactly, by walking the product of two automata.

A ``regex:`` pattern is exact too when it sticks to the plain regular syntax that RE2 and
greenery (which turns it into an automaton) read the same way; anything else (flags, ``\\b``,
Unicode classes, anchors inside the pattern) is ``Unsupported`` and the analysis samples instead.

Each automaton is complete (an explicit dead state) and keyed by character *classes*: characters
that every state treats alike share a column, so a product walks a handful of classes, not ~80
characters. Witness strings prefer readable characters (``CHARS`` is ordered for that).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import TypeVar

S = TypeVar("S", bound=Hashable)

_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_UNRESERVED = _LETTERS + "0123456789" + _LETTERS.upper() + "-._~"
CHARS = _UNRESERVED + "!$&'()*+,;=:@/%"
"""Every character a normalised path can contain, the readable ones first."""
_HEX = frozenset("0123456789ABCDEF")


class Unsupported(ValueError):
    """A regex outside the syntax the analysis reads exactly."""


@dataclass(frozen=True, slots=True)
class Dfa:
    """``table[state][cls[ch]]`` is the next state; state 0 is the start, ``dead`` never accepts."""

    cls: dict[str, int]
    table: tuple[tuple[int, ...], ...]
    finals: frozenset[int]
    dead: int

    def accepts(self, text: str) -> bool:
        state = 0
        for ch in text:
            c = self.cls.get(ch)
            if c is None:
                return False
            state = self.table[state][c]
        return state in self.finals


def _build(start: S, step: Callable[[S, str], S | None], final: Callable[[S], bool]) -> Dfa:
    """Explore the states reachable from ``start`` over ``CHARS`` and compress equal columns.

    ``step`` returns None for the dead state. States are any hashable values.
    """
    index: dict[S, int] = {start: 0}
    order: list[S] = [start]
    rows: list[list[int]] = []
    i = 0
    while i < len(order):
        state = order[i]
        row: list[int] = []
        for ch in CHARS:
            nxt = step(state, ch)
            if nxt is None:
                row.append(-1)
                continue
            j = index.get(nxt)
            if j is None:
                j = index[nxt] = len(order)
                order.append(nxt)
            row.append(j)
        rows.append(row)
        i += 1
    dead = len(order)
    finals = frozenset(j for j, s in enumerate(order) if final(s))
    columns: dict[tuple[int, ...], int] = {}
    cls: dict[str, int] = {}
    for k, ch in enumerate(CHARS):
        column = tuple(dead if row[k] == -1 else row[k] for row in rows)
        cls[ch] = columns.setdefault(column, len(columns))
    by_class = sorted(columns.items(), key=lambda kv: kv[1])
    table = [tuple(column[s] for column, _ in by_class) for s in range(len(rows))]
    table.append(tuple(dead for _ in by_class))
    return _minimise(Dfa(cls, tuple(table), finals, dead))


def _minimise(d: Dfa) -> Dfa:
    """Moore's partition refinement: smaller automata keep every later product small."""
    n = len(d.table)
    block = [1 if s in d.finals else 0 for s in range(n)]
    while True:
        signatures: dict[tuple[int, ...], int] = {}
        new = [
            signatures.setdefault((block[s], *(block[t] for t in d.table[s])), len(signatures))
            for s in range(n)
        ]
        if len(signatures) == len(set(block)):
            break
        block = new
    # Renumber so the start state is 0 again.
    renumber: dict[int, int] = {}
    for s in [0, *range(n)]:
        renumber.setdefault(block[s], len(renumber))
    table: list[tuple[int, ...] | None] = [None] * len(renumber)
    for s in range(n):
        b = renumber[block[s]]
        if table[b] is None:
            table[b] = tuple(renumber[block[t]] for t in d.table[s])
    finals = frozenset(renumber[block[s]] for s in d.finals)
    return Dfa(d.cls, tuple(t for t in table if t is not None), finals, renumber[block[d.dead]])


# --- the languages ----------------------------------------------------------------------------


def _paths_step(state: str | tuple[str, int], ch: str) -> str | tuple[str, int] | None:
    # States: "start", "slash" (at a segment start), "dot1"/"dot2" (segment is "."/".." so far),
    # "seg" (a real segment), ("pct", k) inside a %XX escape.
    if state == "start":
        return "slash" if ch == "/" else None
    if isinstance(state, tuple):
        if ch not in _HEX:
            return None
        return ("pct", 2) if state[1] == 1 else "seg"
    if ch == "/":
        return "slash" if state == "seg" else None  # no "//", "/./" or "/../" survives
    if ch == "%":
        return ("pct", 1)
    if ch == ".":
        return {"slash": "dot1", "dot1": "dot2"}.get(state, "seg")
    return "seg"


PATHS = _build("start", _paths_step, lambda s: s in ("slash", "seg"))  # type: ignore[arg-type]
"""Every path ``normalise_path`` can return (a superset: it does not model which escapes decode)."""

_NICE = _build(True, lambda at_start, ch: None if (at_start and ch == ".") else ch == "/", lambda s: True)
"""Paths whose segments do not start with '.': witnesses from here read like real requests."""


def literal(text: str) -> Dfa:
    return _build(
        0, lambda i, ch: i + 1 if i < len(text) and text[i] == ch else None, lambda i: i == len(text)
    )  # type: ignore[operator]


def _glob_items(glob: str) -> list[str]:
    """Tokens: a character, "?" (one non-slash), "*" (non-slashes), "**" (anything), "/**" (suffix)."""
    items: list[str] = []
    i = 0
    while i < len(glob):
        if glob.startswith("/**", i) and (i + 3 == len(glob) or glob[i + 3] == "/"):
            items.append("/**")
            i += 3
        elif glob.startswith("**", i):
            items.append("**")
            i += 2
        else:
            items.append(glob[i])
            i += 1
    return items


def from_glob(glob: str) -> Dfa:
    """The glob semantics of ``rules.model.compile_paths``, as an automaton."""
    items = _glob_items(glob)
    k = len(items)

    def close(states: Iterable[tuple[int, bool]]) -> frozenset[tuple[int, bool]]:
        # (i, inside): before item i; ``inside`` = within the ".*" of a "/**" at item i.
        out = set(states)
        todo = list(out)
        while todo:
            i, inside = todo.pop()
            if i < k and (inside or items[i] in ("*", "**", "/**")) and (i + 1, False) not in out:
                out.add((i + 1, False))
                todo.append((i + 1, False))
        return frozenset(out)

    def step(state: frozenset[tuple[int, bool]], ch: str) -> frozenset[tuple[int, bool]] | None:
        nxt: set[tuple[int, bool]] = set()
        for i, inside in state:
            if i >= k:
                continue
            item = items[i]
            if inside or item == "**":
                nxt.add((i, inside))
            elif item == "/**":
                if ch == "/":
                    nxt.add((i, True))
            elif item == "*":
                if ch != "/":
                    nxt.add((i, False))
            elif item == "?":
                if ch != "/":
                    nxt.add((i + 1, False))
            elif item == ch:
                nxt.add((i + 1, False))
        return close(nxt) if nxt else None

    return _build(close([(0, False)]), step, lambda s: (k, False) in s)


_REGEX_ESCAPES = frozenset("dDwWsS") | frozenset(r".-/\+*?()[]{}|^$!&'=,:@~_%;")


def _check_regex(rx: str) -> str:
    """The regex without redundant outer anchors, or ``Unsupported``.

    Rules match with RE2 ``fullmatch``, so a leading ``^`` and a trailing ``$`` change nothing;
    elsewhere they (and flags, assertions, Unicode classes) mean something greenery would read
    differently, so they are refused here and the caller samples instead.
    """
    if rx.startswith("^"):
        rx = rx[1:]
    if rx.endswith("$") and not rx.endswith("\\$"):
        rx = rx[:-1]
    i, in_class = 0, False
    while i < len(rx):
        ch = rx[i]
        if ch == "\\":
            if i + 1 >= len(rx) or rx[i + 1] not in _REGEX_ESCAPES:
                raise Unsupported(f"escape \\{rx[i + 1 : i + 2]}")
            i += 2
            continue
        if in_class:
            if ch == "[" and rx[i + 1 : i + 2] == ":":
                raise Unsupported("POSIX class")
            if ch == "]":
                in_class = False
        elif ch == "[":
            in_class = True
            if rx[i + 1 : i + 2] == "^":
                i += 1
            if rx[i + 1 : i + 2] == "]":
                i += 1  # a literal "]" first in the class
        elif ch in "^$":
            raise Unsupported(f"anchor {ch!r} inside the pattern")
        elif ch == "(" and rx[i + 1 : i + 2] == "?":
            if rx[i + 2 : i + 3] != ":":
                raise Unsupported("group flags or named groups")
        elif ch in "*+?}" and rx[i + 1 : i + 2] == "?":
            rx = rx[: i + 1] + rx[i + 2 :]  # lazy or greedy: the same language under fullmatch
        elif ch == "{" and not (rx[i + 1 : i + 2].isdigit()):
            raise Unsupported("'{' that is not a repetition")
        i += 1
    if in_class:
        raise Unsupported("unterminated class")
    return rx


def from_regex(rx: str) -> Dfa:
    """An RE2 pattern (without the ``regex:`` prefix) as an automaton, or ``Unsupported``."""
    from greenery import parse  # only rule sets with regexes pay for the import
    from greenery.parse import NoMatch

    body = _check_regex(rx)
    try:
        fsm = parse(body).to_fsm()
    except (NoMatch, IndexError, ValueError) as exc:
        raise Unsupported(str(exc)) from None
    classes = list(fsm.alphabet)

    def step(state: Hashable, ch: str) -> Hashable | None:
        row = fsm.map.get(state)
        if row is None:
            return None
        for charclass in classes:
            if charclass.accepts(ch):
                nxt: Hashable | None = row.get(charclass)
                return nxt
        return None

    return _build(fsm.initial, step, lambda s: s in fsm.finals)


# --- operations -------------------------------------------------------------------------------


def product(dfas: list[Dfa], accept: Callable[[tuple[bool, ...]], bool]) -> Dfa:
    """The automaton that accepts when ``accept`` holds for the tuple of each one's acceptance."""

    def step(state: tuple[int, ...], ch: str) -> tuple[int, ...]:
        return tuple(d.table[s][d.cls[ch]] for d, s in zip(dfas, state, strict=True))

    def final(state: tuple[int, ...]) -> bool:
        return accept(tuple(s in d.finals for d, s in zip(dfas, state, strict=True)))

    return _build(tuple(0 for _ in dfas), step, final)


def union(dfas: list[Dfa]) -> Dfa:
    return dfas[0] if len(dfas) == 1 else product(dfas, any)


def intersection(dfas: list[Dfa]) -> Dfa:
    return product(dfas, all)


def difference(a: Dfa, b: Dfa) -> Dfa:
    return product([a, b], lambda f: f[0] and not f[1])


def _search(dfas: list[Dfa], accept: Callable[[tuple[bool, ...]], bool], needs_all: bool) -> str | None:
    """The shortest string (readable characters first) reaching an accepted state tuple."""
    reps: dict[tuple[int, ...], str] = {}
    for ch in CHARS:
        reps.setdefault(tuple(d.cls[ch] for d in dfas), ch)
    start = tuple(0 for _ in dfas)
    seen: dict[tuple[int, ...], tuple[tuple[int, ...], str] | None] = {start: None}
    queue = deque([start])
    while queue:
        state = queue.popleft()
        if accept(tuple(s in d.finals for d, s in zip(dfas, state, strict=True))):
            out: list[str] = []
            node = seen[state]
            while node is not None:
                state, ch = node
                out.append(ch)
                node = seen[state]
            return "".join(reversed(out))
        for key, ch in reps.items():
            nxt = tuple(d.table[s][c] for d, s, c in zip(dfas, state, key, strict=True))
            # A dead component never accepts again: the first must accept in every search here,
            # and with ``needs_all`` every one must.
            if nxt[0] == dfas[0].dead or (
                needs_all and any(s == d.dead for d, s in zip(dfas, nxt, strict=True))
            ):
                continue
            if nxt not in seen:
                seen[nxt] = (state, ch)
                queue.append(nxt)
    return None


def common_witness(dfas: list[Dfa]) -> str | None:
    """A readable string all ``dfas`` accept, or None when their intersection is empty."""
    nice = _search([*dfas, _NICE], all, True)
    return nice if nice is not None else _search(dfas, all, True)


def uncovered_witness(inner: Dfa, outer: Dfa) -> str | None:
    """A string ``inner`` accepts and ``outer`` does not; None means ``inner`` ⊆ ``outer``."""
    nice = _search([inner, outer, _NICE], lambda f: f[0] and not f[1] and f[2], False)
    return nice if nice is not None else _search([inner, outer], lambda f: f[0] and not f[1], False)


def is_empty(d: Dfa) -> bool:
    return not d.finals


def _live(d: Dfa) -> set[int]:
    """States from which an accepting state can still be reached."""
    live = set(d.finals)
    changed = True
    while changed:
        changed = False
        for s, row in enumerate(d.table):
            if s not in live and any(t in live for t in row):
                live.add(s)
                changed = True
    return live


def enumerate_strings(d: Dfa, limit: int) -> list[str] | None:
    """Every string ``d`` accepts when they are at most ``limit``, else None (too many, or a
    loop: infinitely many)."""
    live = _live(d)
    reps: dict[int, list[str]] = {}
    for ch in CHARS:
        reps.setdefault(d.cls[ch], []).append(ch)
    out: list[str] = []
    on_path: set[int] = set()

    def walk(state: int, prefix: str) -> bool:
        if state in on_path:
            return False  # a loop through live states: infinitely many strings
        if state in d.finals:
            out.append(prefix)
            if len(out) > limit:
                return False
        on_path.add(state)
        for c, t in enumerate(d.table[state]):
            if t in live and c in reps:
                for ch in reps[c]:
                    if not walk(t, prefix + ch):
                        return False
        on_path.discard(state)
        return True

    return out if 0 not in live or walk(0, "") else None


def sample(d: Dfa, rng: random.Random, max_len: int = 48) -> str | None:
    """A random string ``d`` accepts (a random walk that never leaves the live states)."""
    live = _live(d)
    if 0 not in live:
        return None
    reps: dict[int, list[str]] = {}
    for ch in CHARS:
        reps.setdefault(d.cls[ch], []).append(ch)
    state, out = 0, list[str]()
    while len(out) < max_len:
        if state in d.finals and rng.random() < 0.3:
            return "".join(out)
        moves = [c for c in reps if d.table[state][c] in live]
        if not moves:
            break
        c = rng.choice(moves)
        out.append(rng.choice(reps[c]))
        state = d.table[state][c]
    return "".join(out) if state in d.finals else None
