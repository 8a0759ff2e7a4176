"""A tiny, deterministic POSIX-ish shell: what a simulated container runs, and what exec talks to.

Programs are generators that yield operations and return an exit status:

- ``("out", text)``: write ``text`` (newlines included) to stdout/stderr (one stream, as ACI logs are);
- ``("sleep", seconds)``: let (virtual or real) time pass; ``math.inf`` blocks forever;
- ``("read",)``: read one line of stdin; the driver sends back the line, or ``None`` at end of input;
- ``("tick",)``: one command ran (no effect; lets a driver notice a loop that never sleeps).

The same programs run against a virtual clock (:class:`LazyTrace`, a container's main process: its
log lines and exit time are a pure function of the container's definition) and against a real
websocket (exec). Supported: words with '...', "...", backslash and ``$VAR``/``${VAR}``/
``${VAR:-default}``/``$?`` expansion (no word splitting), ``;``, newlines, ``&&``, ``||``, ``#``
comments, ``NAME=value``, ``while LIST; do LIST; done``, ``for NAME in WORDS; do LIST; done`` and
the builtins listed in :data:`BUILTINS`. Anything else is ``sh: 1: NAME: not found`` (status 127).
``exec PROGRAM ARGS`` runs a top-level program; a program that is not a builtin is treated as a
long-running server (it runs until stopped), as is a container without a command.
"""

from __future__ import annotations

import datetime as dt
import math
import posixpath
from collections import deque
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any

Op = tuple[Any, ...]
Program = Generator[Op, Any, int]

SHELLS = frozenset({"sh", "bash", "ash", "dash"})
KEYWORDS = frozenset({"while", "for", "do", "done", "in"})


class ShellExit(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class Interrupt(Exception):
    """Ctrl-C from the terminal: thrown into the running program."""


class ShellSyntaxError(Exception):
    pass


@dataclass
class ShellContext:
    env: dict[str, str]
    hostname: str = "localhost"
    now: Callable[[], dt.datetime] = field(default=lambda: dt.datetime.now(dt.UTC))
    terminal: tuple[int, int] | None = None  # (rows, cols)
    status: int = 0
    cwd: str = "/"
    interactive: bool = False

    def child(self) -> ShellContext:
        return ShellContext(
            dict(self.env), self.hostname, self.now, self.terminal, self.status, self.cwd, self.interactive
        )


# ---------------------------------------------------------------------------------------------
# Lexer


@dataclass
class Word:
    parts: list[tuple[str, str]]  # ("lit", text) | ("var", name[:-default])
    quoted: bool = False

    def literal(self) -> str | None:
        """The word's text if it has no expansions."""
        if any(kind != "lit" for kind, _ in self.parts):
            return None
        return "".join(text for _, text in self.parts)

    def keyword(self) -> str | None:
        text = self.literal()
        return text if text in KEYWORDS and not self.quoted else None


Token = Word | str  # str: an operator: ";", "\n", "&&", "||", "|", "&"

_NAME_START = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_"
_NAME_CHARS = _NAME_START + "0123456789"


def tokenize(src: str) -> list[Token]:
    tokens: list[Token] = []
    parts: list[tuple[str, str]] = []
    quoted = False
    started = False
    i = 0

    def lit(text: str) -> None:
        if parts and parts[-1][0] == "lit":
            parts[-1] = ("lit", parts[-1][1] + text)
        else:
            parts.append(("lit", text))

    def end_word() -> None:
        nonlocal parts, quoted, started
        if started:
            tokens.append(Word(parts, quoted))
        parts, quoted, started = [], False, False

    def variable(j: int) -> int:
        """Parse a ``$`` expansion at src[j] == '$'; returns the index after it."""
        if j + 1 < len(src) and src[j + 1] == "{":
            close = src.find("}", j + 2)
            if close < 0:
                raise ShellSyntaxError("Bad substitution")
            parts.append(("var", src[j + 2 : close]))
            return close + 1
        if j + 1 < len(src) and src[j + 1] in "?$#0123456789":
            parts.append(("var", src[j + 1]))
            return j + 2
        k = j + 1
        if k < len(src) and src[k] in _NAME_START:
            while k < len(src) and src[k] in _NAME_CHARS:
                k += 1
            parts.append(("var", src[j + 1 : k]))
            return k
        lit("$")
        return j + 1

    while i < len(src):
        c = src[i]
        if c in " \t\r":
            end_word()
            i += 1
        elif c == "\n" or c == ";":
            end_word()
            tokens.append(c)
            i += 1
        elif c in "&|":
            end_word()
            if i + 1 < len(src) and src[i + 1] == c:
                tokens.append(c + c)
                i += 2
            else:
                tokens.append(c)
                i += 1
        elif c == "#" and not started:
            while i < len(src) and src[i] != "\n":
                i += 1
        elif c == "'":
            close = src.find("'", i + 1)
            if close < 0:
                raise ShellSyntaxError("Unterminated quoted string")
            started, quoted = True, True
            lit(src[i + 1 : close])
            i = close + 1
        elif c == '"':
            started, quoted = True, True
            lit("")
            i += 1
            while True:
                if i >= len(src):
                    raise ShellSyntaxError("Unterminated quoted string")
                d = src[i]
                if d == '"':
                    i += 1
                    break
                if d == "\\" and i + 1 < len(src) and src[i + 1] in '$"\\`\n':
                    if src[i + 1] != "\n":
                        lit(src[i + 1])
                    i += 2
                elif d == "$":
                    i = variable(i)
                else:
                    lit(d)
                    i += 1
        elif c == "\\":
            if i + 1 < len(src) and src[i + 1] == "\n":
                i += 2  # line continuation
                continue
            started, quoted = True, True
            lit(src[i + 1] if i + 1 < len(src) else "")
            i += 2
        elif c == "$":
            started = True
            i = variable(i)
        else:
            started = True
            lit(c)
            i += 1
    end_word()
    return tokens


# ---------------------------------------------------------------------------------------------
# Parser


@dataclass
class Simple:
    words: list[Word]


@dataclass
class While:
    condition: Seq
    body: Seq


@dataclass
class For:
    name: str
    words: list[Word]
    body: Seq


@dataclass
class AndOr:
    first: Command
    rest: list[tuple[str, Command]]


@dataclass
class Seq:
    items: list[AndOr]


Command = Simple | While | For


class _Parser:
    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.i = 0

    def peek(self) -> Token | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def next(self) -> Token:
        tok = self.peek()
        if tok is None:
            raise ShellSyntaxError("end of file unexpected")
        self.i += 1
        return tok

    def skip_separators(self) -> None:
        while self.peek() in (";", "\n"):
            self.i += 1

    def at_keyword(self, *words: str) -> bool:
        tok = self.peek()
        return isinstance(tok, Word) and tok.keyword() in words

    def expect_keyword(self, word: str) -> None:
        tok = self.next()
        if not (isinstance(tok, Word) and tok.keyword() == word):
            raise ShellSyntaxError(f'"{word}" expected')

    def parse_seq(self, terminators: tuple[str, ...] = ()) -> Seq:
        items: list[AndOr] = []
        self.skip_separators()
        while self.peek() is not None and not self.at_keyword(*terminators):
            items.append(self.parse_and_or())
            tok = self.peek()
            if tok in (";", "\n"):
                self.skip_separators()
            elif tok is not None and not self.at_keyword(*terminators):
                raise ShellSyntaxError(f'"{tok if isinstance(tok, str) else "word"}" unexpected')
        return Seq(items)

    def parse_and_or(self) -> AndOr:
        first = self.parse_command()
        rest: list[tuple[str, Command]] = []
        while self.peek() in ("&&", "||"):
            op = self.next()
            assert isinstance(op, str)
            while self.peek() == "\n":
                self.i += 1
            rest.append((op, self.parse_command()))
        return AndOr(first, rest)

    def parse_command(self) -> Command:
        tok = self.peek()
        if isinstance(tok, str):
            if tok in ("|", "&"):
                raise ShellSyntaxError(f'"{tok}" is not supported by this shell')
            raise ShellSyntaxError(f'"{tok}" unexpected')
        if tok is None:
            raise ShellSyntaxError("end of file unexpected")
        if tok.keyword() == "while":
            self.i += 1
            condition = self.parse_seq(("do",))
            self.expect_keyword("do")
            body = self.parse_seq(("done",))
            self.expect_keyword("done")
            return While(condition, body)
        if tok.keyword() == "for":
            self.i += 1
            name_tok = self.next()
            name = name_tok.literal() if isinstance(name_tok, Word) else None
            if not name:
                raise ShellSyntaxError("Bad for loop variable")
            words: list[Word] = []
            if self.at_keyword("in"):
                self.i += 1
                while isinstance(self.peek(), Word) and not self.at_keyword("do"):
                    w = self.next()
                    assert isinstance(w, Word)
                    words.append(w)
            self.skip_separators()
            self.expect_keyword("do")
            body = self.parse_seq(("done",))
            self.expect_keyword("done")
            return For(name, words, body)
        if tok.keyword() in ("do", "done", "in"):
            raise ShellSyntaxError(f'"{tok.keyword()}" unexpected')
        words = []
        while isinstance(self.peek(), Word):
            w = self.next()
            assert isinstance(w, Word)
            words.append(w)
        return Simple(words)


def parse(src: str) -> Seq:
    parser = _Parser(tokenize(src))
    seq = parser.parse_seq()
    if parser.peek() is not None:
        raise ShellSyntaxError(f'"{parser.peek()}" unexpected')
    return seq


# ---------------------------------------------------------------------------------------------
# Interpreter


def expand(word: Word, ctx: ShellContext) -> str:
    out: list[str] = []
    for kind, text in word.parts:
        if kind == "lit":
            out.append(text)
            continue
        name, _, default = text.partition(":-")
        if name == "?":
            value: str | None = str(ctx.status)
        elif name == "$":
            value = "1"
        elif name == "#":
            value = "0"
        elif name.isdigit():
            value = "sh" if name == "0" else None
        else:
            value = ctx.env.get(name)
        if not value and ":-" in text:
            value = default
        out.append(value or "")
    return "".join(out)


def run_seq(seq: Seq, ctx: ShellContext) -> Program:
    for item in seq.items:
        status = yield from run_command(item.first, ctx)
        ctx.status = status
        for op, cmd in item.rest:
            if (op == "&&" and ctx.status == 0) or (op == "||" and ctx.status != 0):
                ctx.status = yield from run_command(cmd, ctx)
    return ctx.status


def run_command(cmd: Command, ctx: ShellContext) -> Program:
    yield ("tick",)  # lets a driver see a loop that never sleeps
    if isinstance(cmd, While):
        status = 0
        while True:
            cond = yield from run_seq(cmd.condition, ctx)
            if cond != 0:
                return status
            status = yield from run_seq(cmd.body, ctx)
    if isinstance(cmd, For):
        values = [expand(w, ctx) for w in cmd.words] if cmd.words else []
        status = 0
        for value in values:
            ctx.env[cmd.name] = value
            status = yield from run_seq(cmd.body, ctx)
        return status
    argv = [expand(w, ctx) for w in cmd.words]
    assignments: dict[str, str] = {}
    while argv and _assignment(cmd.words[len(assignments)], argv[0]):
        name, _, value = argv.pop(0).partition("=")
        assignments[name] = value
    if not argv:
        ctx.env.update(assignments)
        return 0
    if assignments:
        saved = dict(ctx.env)
        ctx.env.update(assignments)
        try:
            return (yield from run_argv(argv, ctx))
        finally:
            ctx.env = saved
    return (yield from run_argv(argv, ctx))


def _assignment(word: Word, text: str) -> bool:
    if not word.parts or word.parts[0][0] != "lit":
        return False
    head = word.parts[0][1]
    name, eq, _ = head.partition("=")
    return bool(eq) and bool(name) and name[0] in _NAME_START and all(c in _NAME_CHARS for c in name)


def run_script(src: str, ctx: ShellContext) -> Program:
    try:
        seq = parse(src)
    except ShellSyntaxError as e:
        yield ("out", f"sh: 1: Syntax error: {e}\n")
        return 2
    return (yield from run_seq(seq, ctx))


def run_argv(argv: list[str], ctx: ShellContext) -> Program:
    name = argv[0]
    builtin = BUILTINS.get(posixpath.basename(name) if "/" in name else name)
    if builtin is None:
        yield ("out", f"sh: 1: {name}: not found\n")
        return 127
    return (yield from builtin(argv, ctx))


# --- builtins --------------------------------------------------------------------------------


def _echo(argv: list[str], ctx: ShellContext) -> Program:
    args = argv[1:]
    newline = True
    if args and args[0] == "-n":
        newline, args = False, args[1:]
    yield ("out", " ".join(args) + ("\n" if newline else ""))
    return 0


def _printf(argv: list[str], ctx: ShellContext) -> Program:
    if len(argv) < 2:
        yield ("out", "printf: usage: printf format [arguments]\n")
        return 2
    fmt = argv[1].replace("\\n", "\n").replace("\\t", "\t")
    args = iter(argv[2:])
    out: list[str] = []
    i = 0
    while i < len(fmt):
        if fmt[i] == "%" and i + 1 < len(fmt):
            spec = fmt[i + 1]
            out.append("%" if spec == "%" else next(args, ""))
            i += 2
        else:
            out.append(fmt[i])
            i += 1
    yield ("out", "".join(out))
    return 0


def _sleep(argv: list[str], ctx: ShellContext) -> Program:
    if len(argv) < 2:
        yield ("out", "sleep: missing operand\n")
        return 1
    total = 0.0
    for arg in argv[1:]:
        if arg in ("infinity", "inf"):
            total = math.inf
            continue
        scale = {"s": 1, "m": 60, "h": 3600, "d": 86400}.get(arg[-1:])
        number = arg[:-1] if scale else arg
        try:
            value = float(number) * (scale or 1)
        except ValueError:
            yield ("out", f"sleep: invalid time interval '{arg}'\n")
            return 1
        if value < 0 or math.isnan(value):
            yield ("out", f"sleep: invalid time interval '{arg}'\n")
            return 1
        total += value
    yield ("sleep", total)
    return 0


def _exit(argv: list[str], ctx: ShellContext) -> Program:
    if len(argv) > 1:
        try:
            code = int(argv[1])
        except ValueError:
            yield ("out", f"sh: 1: exit: Illegal number: {argv[1]}\n")
            raise ShellExit(2) from None
    else:
        code = ctx.status
    raise ShellExit(code & 0xFF)
    yield  # pragma: no cover  (makes this a generator)


def _true(argv: list[str], ctx: ShellContext) -> Program:
    return 0
    yield  # pragma: no cover


def _false(argv: list[str], ctx: ShellContext) -> Program:
    return 1
    yield  # pragma: no cover


def _env(argv: list[str], ctx: ShellContext) -> Program:
    yield ("out", "".join(f"{k}={v}\n" for k, v in sorted(ctx.env.items())))
    return 0


def _printenv(argv: list[str], ctx: ShellContext) -> Program:
    if len(argv) == 1:
        return (yield from _env(argv, ctx))
    status = 0
    for name in argv[1:]:
        if name in ctx.env:
            yield ("out", ctx.env[name] + "\n")
        else:
            status = 1
    return status


def _hostname(argv: list[str], ctx: ShellContext) -> Program:
    yield ("out", ctx.hostname + "\n")
    return 0


def _pwd(argv: list[str], ctx: ShellContext) -> Program:
    yield ("out", ctx.cwd + "\n")
    return 0


def _cd(argv: list[str], ctx: ShellContext) -> Program:
    target = argv[1] if len(argv) > 1 else "/root"
    ctx.cwd = posixpath.normpath(posixpath.join(ctx.cwd, target))
    return 0
    yield  # pragma: no cover


def _date(argv: list[str], ctx: ShellContext) -> Program:
    now = ctx.now().astimezone(dt.UTC)
    yield ("out", now.strftime("%a %b ") + f"{now.day:2d}" + now.strftime(" %H:%M:%S UTC %Y") + "\n")
    return 0


def _stty(argv: list[str], ctx: ShellContext) -> Program:
    if argv[1:] == ["size"]:
        if ctx.terminal is None:
            yield ("out", "stty: 'standard input': Inappropriate ioctl for device\n")
            return 1
        yield ("out", f"{ctx.terminal[0]} {ctx.terminal[1]}\n")
        return 0
    return 0


def _cat(argv: list[str], ctx: ShellContext) -> Program:
    if len(argv) == 1 or argv[1:] == ["-"]:
        while True:
            line = yield ("read",)
            if line is None:
                return 0
            yield ("out", line + "\n")
    status = 0
    for name in argv[1:]:
        path = posixpath.normpath(posixpath.join(ctx.cwd, name))
        if path == "/etc/hostname":
            yield ("out", ctx.hostname + "\n")
        else:
            yield ("out", f"cat: {name}: No such file or directory\n")
            status = 1
    return status


def _read(argv: list[str], ctx: ShellContext) -> Program:
    line = yield ("read",)
    if line is None:
        return 1
    names = [a for a in argv[1:] if not a.startswith("-")] or ["REPLY"]
    ctx.env[names[0]] = line
    return 0


def _seq(argv: list[str], ctx: ShellContext) -> Program:
    try:
        numbers = [int(a) for a in argv[1:]]
    except ValueError:
        yield ("out", "seq: invalid argument\n")
        return 1
    if len(numbers) == 1:
        first, last = 1, numbers[0]
    elif len(numbers) == 2:
        first, last = numbers
    else:
        yield ("out", "seq: missing operand\n")
        return 1
    yield ("out", "".join(f"{n}\n" for n in range(first, last + 1)))
    return 0


def _test(argv: list[str], ctx: ShellContext) -> Program:
    args = argv[1:]
    if posixpath.basename(argv[0]) == "[":
        if not args or args[-1] != "]":
            yield ("out", "sh: 1: [: missing ]\n")
            return 2
        args = args[:-1]
    negate = False
    if args and args[0] == "!":
        negate, args = True, args[1:]
    result: bool
    if not args:
        result = False
    elif len(args) == 1:
        result = args[0] != ""
    elif len(args) == 2 and args[0] in ("-n", "-z"):
        result = (args[1] != "") == (args[0] == "-n")
    elif len(args) == 3 and args[1] in ("=", "==", "!="):
        result = (args[0] == args[2]) == (args[1] != "!=")
    elif len(args) == 3 and args[1] in ("-eq", "-ne", "-lt", "-le", "-gt", "-ge"):
        try:
            a, b = int(args[0]), int(args[2])
        except ValueError:
            yield ("out", "sh: 1: [: Illegal number\n")
            return 2
        result = {
            "-eq": a == b,
            "-ne": a != b,
            "-lt": a < b,
            "-le": a <= b,
            "-gt": a > b,
            "-ge": a >= b,
        }[args[1]]
    else:
        yield ("out", "sh: 1: [: unexpected operator\n")
        return 2
    return 0 if result != negate else 1


def _export(argv: list[str], ctx: ShellContext) -> Program:
    for arg in argv[1:]:
        name, eq, value = arg.partition("=")
        if eq:
            ctx.env[name] = value
    return 0
    yield  # pragma: no cover


def _unset(argv: list[str], ctx: ShellContext) -> Program:
    for name in argv[1:]:
        ctx.env.pop(name, None)
    return 0
    yield  # pragma: no cover


def _shell(argv: list[str], ctx: ShellContext) -> Program:
    child = ctx.child()
    args = argv[1:]
    if args and args[0] == "-c":
        if len(args) < 2:
            yield ("out", "sh: 0: -c requires an argument\n")
            return 2
        try:
            return (yield from run_script(args[1], child))
        except ShellExit as e:
            return e.code
    if args:
        yield ("out", f"sh: 0: cannot open {args[0]}: No such file\n")
        return 2
    try:
        return (yield from interactive_shell(child))
    except ShellExit as e:
        return e.code


def _exec(argv: list[str], ctx: ShellContext) -> Program:
    if len(argv) == 1:
        return 0
    code = yield from top_level_program(argv[1:], ctx)
    raise ShellExit(code)


BUILTINS: dict[str, Callable[[list[str], ShellContext], Program]] = {
    "echo": _echo,
    "printf": _printf,
    "sleep": _sleep,
    "exit": _exit,
    "true": _true,
    ":": _true,
    "false": _false,
    "env": _env,
    "printenv": _printenv,
    "hostname": _hostname,
    "pwd": _pwd,
    "cd": _cd,
    "date": _date,
    "stty": _stty,
    "cat": _cat,
    "read": _read,
    "seq": _seq,
    "test": _test,
    "[": _test,
    "export": _export,
    "unset": _unset,
    "exec": _exec,
    **{name: _shell for name in SHELLS},
}


def interactive_shell(ctx: ShellContext, prompt: str = "# ") -> Program:
    """A read-eval-print loop; ``exit`` or end of input ends it. Ctrl-C abandons the current line."""
    ctx.interactive = True
    while True:
        try:
            yield ("out", prompt)
            line = yield ("read",)
            if line is None:
                return ctx.status
            yield from run_script(line, ctx)
        except Interrupt:
            ctx.status = 130
            continue


def server_process(label: str, env: Mapping[str, str], run_index: int) -> Program:
    """A container's process when it has no command or runs a program this shell does not know.

    Driven by environment variables (all optional):
    ``LOCALARM_RUN_SECONDS`` (exit after this long; default: run until stopped),
    ``LOCALARM_EXIT_CODE`` (the exit code; alone it means exit at once),
    ``LOCALARM_FAIL_TIMES=N`` (runs 0..N-1 exit with ``LOCALARM_EXIT_CODE``, default 1, after
    ``LOCALARM_RUN_SECONDS``, default 0; later runs behave as if neither were set, except that
    ``LOCALARM_RUN_SECONDS`` still ends them, with code 0),
    ``LOCALARM_LOG_EVERY`` (seconds between ``localarm: tick N`` lines).
    """

    def number(name: str) -> float | None:
        raw = env.get(name)
        if raw is None or raw == "":
            return None
        try:
            return float(raw)
        except ValueError:
            return None

    run_seconds = number("LOCALARM_RUN_SECONDS")
    exit_code_raw = number("LOCALARM_EXIT_CODE")
    fail_times = int(number("LOCALARM_FAIL_TIMES") or 0)
    log_every = number("LOCALARM_LOG_EVERY")
    duration: float
    if fail_times > 0 and run_index < fail_times:
        code = int(exit_code_raw) if exit_code_raw is not None else 1
        duration = run_seconds if run_seconds is not None else 0.0
    elif fail_times > 0:
        code, duration = 0, run_seconds if run_seconds is not None else math.inf
    elif run_seconds is not None:
        code, duration = int(exit_code_raw or 0), run_seconds
    elif exit_code_raw is not None:
        code, duration = int(exit_code_raw), 0.0
    else:
        code, duration = 0, math.inf
    yield ("out", f"localarm: {label} started (run {run_index})\n")
    if log_every is not None and log_every > 0:
        ticks = 0
        elapsed = 0.0
        while elapsed + log_every <= duration:
            yield ("sleep", log_every)
            elapsed += log_every
            ticks += 1
            yield ("out", f"localarm: tick {ticks}\n")
        if duration - elapsed > 0:
            yield ("sleep", duration - elapsed)
    else:
        yield ("sleep", duration)
    yield ("out", f"localarm: exiting with code {code}\n")
    return code & 0xFF


def top_level_program(argv: list[str], ctx: ShellContext, label: str = "") -> Program:
    """What runs as a container's process (or as ``exec``'s target) for ``argv``."""
    if not argv:
        return (yield from server_process(label or "process", ctx.env, _run_index(ctx)))
    name = posixpath.basename(argv[0])
    if name in BUILTINS:
        try:
            return (yield from BUILTINS[name](argv, ctx))
        except ShellExit as e:
            return e.code
    return (yield from server_process(" ".join(argv), ctx.env, _run_index(ctx)))


def _run_index(ctx: ShellContext) -> int:
    try:
        return int(ctx.env.get("LOCALARM_RUN_INDEX", "0"))
    except ValueError:
        return 0


# ---------------------------------------------------------------------------------------------
# Running against a virtual clock


@dataclass
class TraceLine:
    offset: float
    text: str


class LazyTrace:
    """A program run against virtual time, advanced only as far as someone has looked.

    ``advance(t)`` runs the program up to offset ``t`` seconds after it started. Afterwards
    ``finished`` tells whether it exited by then (``end``, ``exit_code``), and ``lines`` holds its
    output lines (the last ``max_lines``) with the offset at which each line was completed.
    Input is always at its end. A program that makes no progress in time for ``spin_limit`` steps
    is taken to spin forever, silently.
    """

    def __init__(self, program: Program, *, max_lines: int = 10000, spin_limit: int = 100_000) -> None:
        self._program = program
        self._started = False
        self._send: Any = None
        self._sleep_until: float | None = None
        self._spin_limit = spin_limit
        self._partial = ""
        self.now = 0.0
        self.lines: deque[TraceLine] = deque(maxlen=max_lines)
        self.total_lines = 0
        self.end: float | None = None
        self.exit_code: int | None = None
        self.hung = False

    @property
    def finished(self) -> bool:
        return self.end is not None

    def _emit(self, text: str) -> None:
        data = self._partial + text
        *complete, self._partial = data.split("\n")
        for line in complete:
            self.lines.append(TraceLine(self.now, line))
            self.total_lines += 1

    def _finish(self, code: int) -> None:
        if self._partial:
            self.lines.append(TraceLine(self.now, self._partial))
            self.total_lines += 1
            self._partial = ""
        self.end = self.now
        self.exit_code = code & 0xFF

    def advance(self, horizon: float) -> None:
        steps = 0
        while self.end is None and not self.hung:
            if self._sleep_until is not None:
                if self._sleep_until > horizon:
                    return
                self.now = self._sleep_until
                self._sleep_until = None
                steps = 0
            try:
                op = self._program.send(self._send) if self._started else next(self._program)
                self._started = True
            except StopIteration as stop:
                self._finish(int(stop.value or 0))
                return
            except ShellExit as e:
                self._finish(e.code)
                return
            self._send = None
            steps += 1
            if steps > self._spin_limit:
                self.hung = True
                return
            kind = op[0]
            if kind == "out":
                self._emit(str(op[1]))
            elif kind == "sleep":
                seconds = float(op[1])
                if math.isinf(seconds):
                    self.hung = True  # blocked forever; not an error
                    return
                if seconds > 0:
                    self._sleep_until = self.now + seconds
            elif kind == "read":
                self._send = None  # end of input
