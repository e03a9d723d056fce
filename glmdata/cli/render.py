"""``glmdata render``: a row as GLM-4 sees it, the trained parts marked, optionally token by token."""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from glmdata.cli import common

if TYPE_CHECKING:
    from rich.text import Text

    from glmdata.convert import Options
    from glmdata.families import Reasoning
    from glmdata.models import MessageDict
    from glmdata.render import Template, TrainOn
    from glmdata.result import Result

# Visible markers for trained text when the output is not a terminal (no colour to show it).
TRAIN_OPEN, TRAIN_CLOSE = "⟦", "⟧"


def render(
    file: Annotated[
        str,
        typer.Argument(
            help="Messages JSONL (default: messages.jsonl, the output of convert), "
            "or any supported format, converted on the fly."
        ),
    ] = "messages.jsonl",
    row: Annotated[
        int | None, typer.Option("--row", help="Row to render (0-based; negative counts from the end). Default 0.")
    ] = None,
    rows: Annotated[
        str | None, typer.Option("--rows", help='Render rows A:B as JSONL {"text": ...} on stdout.')
    ] = None,
    all_rows: Annotated[bool, typer.Option("--all", help='Render every row as JSONL {"text": ...} on stdout.')] = False,
    raw: Annotated[bool, typer.Option("--raw", help="Print exactly the training text and nothing else.")] = False,
    generation_prompt: Annotated[
        bool,
        typer.Option(
            "--generation-prompt", help="Render for inference: append the <|assistant|> tag (no trained spans)."
        ),
    ] = False,
    template: common.TemplateOpt = None,
    reasoning: common.ReasoningOpt = "text",
    train_on: Annotated[
        str,
        typer.Option(
            "--train-on",
            help="assistant (the GLM-4 demo's masks), all (every token, as the tool-call tutorial), "
            "last (final assistant turn only).",
        ),
    ] = "assistant",
    tokens: Annotated[
        bool,
        typer.Option(
            "--tokens", help="Show the token table (position, token, id, label) and totals; needs --tokenizer."
        ),
    ] = False,
    tokenizer: Annotated[
        str | None,
        typer.Option("--tokenizer", help="Local tokenizer directory (e.g. ../shared/tokenizer/glm-4-9b-chat)."),
    ] = None,
    max_length: Annotated[
        int | None,
        typer.Option("--max-length", help="With --tokens: say whether this length truncates the row and what it cuts."),
    ] = None,
    check_template: Annotated[
        str | None,
        typer.Option(
            "--check-template",
            help="Tokenizer directory whose own chat template is compared with ours on the selected rows.",
        ),
    ] = None,
    from_format: common.FromOpt = None,
    call_style: common.StyleOpt = common.CallStyle.native,
) -> None:
    """Show a row as GLM-4 sees it: special tokens highlighted, trained spans marked."""

    def body() -> int:
        options = common.conversion_options(from_format, call_style)
        train = common.checked_train_on(train_on)
        thoughts = common.checked_reasoning(reasoning)
        common.check_max_length(max_length)
        if tokens and not tokenizer:
            raise common.UserError(
                "--tokens needs --tokenizer PATH (a local tokenizer directory, e.g. ../shared/tokenizer/glm-4-9b-chat)"
            )
        if file == "messages.jsonl" and not Path(file).exists():
            raise common.UserError(
                "messages.jsonl not found: run `glmdata convert DATA -o messages.jsonl` first, or pass a file"
            )
        ours = common.chat_template(template)
        selection = Selection(file, options, row, rows, all_rows)
        if check_template:
            return compare_templates(selection, ours, check_template, chosen=template is not None)
        return render_rows(selection, ours, raw, generation_prompt, train, tokens, tokenizer, max_length, thoughts)

    common.run(body, stdout=check_template is None)


class Selection:
    """The rows that ``--row``, ``--rows`` or ``--all`` select from a file (``--row 0`` by default)."""

    def __init__(self, path: str, options: Options, row: int | None, rows: str | None, all_rows: bool):
        self.path, self.options, self.row, self.rows, self.all_rows = path, options, row, rows, all_rows

    @property
    def many(self) -> bool:
        """Several rows, written as JSONL on stdout."""
        return self.rows is not None or self.all_rows

    def results(self, default_all: bool = False) -> tuple[Iterator[Result], str]:
        """The selected rows' results and a description; rows out of range are a usage error."""
        from glmdata.convert import convert_file

        results = convert_file(self.path, self.options)
        if self.all_rows or (default_all and self.row is None and self.rows is None):
            return results, "all rows"
        if self.rows is not None:
            start, stop = self._range()
            return (r for r in results if r.index >= start and (stop is None or r.index < stop)), f"rows {self.rows}"
        index = 0 if self.row is None else self.row
        if index >= 0:
            for result in results:
                if result.index == index:
                    return iter([result]), f"row {index}"
            count = self.count()
            if not count:
                raise common.UserError(f"{self.path} has no rows")
            raise common.UserError(f"row {index} is out of range: {self.path} has {count} rows (0..{count - 1})")
        tail: deque = deque(results, maxlen=min(-index, sys.maxsize))  # --row -10**30: out of range, not OverflowError
        if len(tail) < -index:
            raise common.UserError(f"row {index} is out of range: {self.path} has {len(tail)} rows")
        return iter([tail[0]]), f"row {tail[0].index}"

    def _range(self) -> tuple[int, int | None]:
        assert self.rows is not None
        try:
            start_text, _, stop_text = self.rows.partition(":")
            start = int(start_text) if start_text else 0
            stop = int(stop_text) if stop_text else None
        except ValueError:
            raise common.UserError(f"--rows takes A:B (e.g. 0:10), not {self.rows!r}") from None
        if start < 0 or (stop is not None and stop < start):
            raise common.UserError(f"--rows {self.rows}: give 0 <= A <= B")
        return start, stop

    def count(self) -> int:
        """How many rows the file has (read again, not converted)."""
        from glmdata.io import read_records

        last = -1
        for record in read_records(self.path):
            last = record.index
        return last + 1


def render_rows(
    selection: Selection,
    template: Template,
    raw: bool,
    generation_prompt: bool,
    train_on: TrainOn,
    tokens: bool,
    tokenizer: str | None,
    max_length: int | None,
    reasoning: Reasoning = "text",
) -> int:
    """Render the selected rows; exit 1 when a row is rejected or has nothing to train."""
    import orjson

    from glmdata.render import NothingToTrain, TemplateError, render_spans
    from glmdata.render import render as render_text

    selected, _ = selection.results()
    many = selection.many
    status = 0
    selected_any = False
    unrendered = 0  # rows left out of --rows/--all output (rejected, or nothing to train)

    def left_out(message: str) -> None:
        nonlocal unrendered
        unrendered += 1
        if unrendered <= common.SHOW_FINDINGS:
            common.err.print(message)

    for result in selected:
        selected_any = True
        if not many:
            _show_conversion(result)
        if result.row is None or result.rejected:
            status = 1
            if not many:
                return 1
            reasons = "; ".join(f"{i.path}: {i.message}" for i in result.errors)
            left_out(f"[red]row {result.index} rejected:[/] " + escape(reasons))
            continue
        messages = result.row["messages"]
        spans: list[tuple[int, int]] = []
        try:
            if generation_prompt:
                text = render_text(messages, add_generation_prompt=True, template=template, reasoning=reasoning)
            else:
                text, spans = render_spans(messages, train_on=train_on, template=template, reasoning=reasoning)
        except NothingToTrain as exc:
            left_out(f"[red]row {result.index}: {escape(str(exc))}[/]")
            status = 1
            continue
        except (TemplateError, ValueError) as exc:  # ValueError: a row the template's input cannot hold
            raise common.UserError(f"row {result.index}: {exc}") from None
        if many:
            sys.stdout.buffer.write(orjson.dumps({"text": text}) + b"\n")
        elif raw:
            sys.stdout.write(text)
            sys.stdout.flush()
        elif tokens:
            assert tokenizer is not None
            _token_table(messages, tokenizer, max_length, train_on, template, reasoning)
        else:
            _show_text(result.index, text, spans, train_on, legend=not generation_prompt)
    if unrendered > common.SHOW_FINDINGS:
        more = f"{unrendered - common.SHOW_FINDINGS:,}"
        common.err.print(
            f"[red]... and {more} more rows not rendered[/] "
            f"(`glmdata validate {escape(selection.path)}` lists every finding)"
        )
    if selection.rows is not None and not selected_any:
        count = selection.count()
        span = f" (0..{count - 1})" if count else ""
        raise common.UserError(f"--rows {selection.rows} selects no rows: {selection.path} has {count} rows{span}")
    return status


def _show_conversion(result: Result) -> None:
    if result.repairs:
        names = sorted({name for name, _ in result.repairs})
        common.err.print(f"[dim]row {result.index}: converted from {result.format}; repairs: {', '.join(names)}[/]")
    for issue in result.issues:
        colour = "red" if issue.severity == "error" else "yellow"
        common.err.print(
            f"[{colour}]row {result.index} {escape(f'{issue.path}: {issue.message}')}[/] [dim]({issue.code})[/]"
        )


def _show_text(index: int, text: str, spans: list[tuple[int, int]], train_on: TrainOn, legend: bool) -> None:
    from rich.console import Console

    out = Console(highlight=False, soft_wrap=True, emoji=False)
    colour = out.is_terminal
    out.print(_styled(text, spans, colour), markup=False)
    if legend:
        how = (
            "trained text in green, special tokens in magenta"
            if colour
            else f"trained text between {TRAIN_OPEN} and {TRAIN_CLOSE}"
        )
        trained = sum(end - start for start, end in spans)
        about = f"{len(text):,} characters, {trained:,} trained ({how}; train-on {train_on})"
        common.err.print(f"[dim]row {index}: {escape(about)}[/]")


def _styled(text: str, spans: list[tuple[int, int]], colour: bool) -> str | Text:
    from rich.text import Text

    from glmdata.checks import SPECIAL_TOKEN_RE

    if not colour:
        out, last = [], 0
        for start, end in spans:
            out += [text[last:start], TRAIN_OPEN, text[start:end], TRAIN_CLOSE]
            last = end
        out.append(text[last:])
        return "".join(out)
    styled = Text(text)
    for start, end in spans:
        styled.stylize("green", start, end)
    for found in SPECIAL_TOKEN_RE.finditer(text):
        styled.stylize("bold magenta", found.start(), found.end())
    return styled


def _token_table(
    messages: list[MessageDict],
    tokenizer_path: str,
    max_length: int | None,
    train_on: TrainOn,
    template: Template,
    reasoning: Reasoning = "text",
) -> None:
    from rich.console import Console
    from rich.table import Table

    from glmdata.masks import IGNORE_INDEX, tokenize, truncation_report

    tok = common.tokenizer_at(tokenizer_path)
    encoded = tokenize(messages, tok, train_on=train_on, template=template, reasoning=reasoning)
    table = Table("pos", "token", "id", "label", title="tokens (label -100 = not trained)", title_justify="left")
    for position, (token_id, label) in enumerate(zip(encoded["input_ids"], encoded["labels"], strict=True)):
        piece = escape(repr(tok.decode([token_id]))[1:-1])  # [gMASK] is text, not markup
        cut = max_length is not None and position >= max_length
        style = "dim strike" if cut else "green" if label != IGNORE_INDEX else None
        table.add_row(str(position), piece, str(token_id), str(label), style=style)
    out = Console(highlight=False, emoji=False)
    out.print(table)
    report = truncation_report(messages, tok, max_length, train_on=train_on, template=template, reasoning=reasoning)
    out.print(f"tokens: {report.tokens:,}  trained tokens: {report.trained_tokens:,}")
    if max_length is None:
        return
    if not report.truncated:
        out.print(f"--max-length {max_length:,} keeps the whole row")
        return
    where = (
        "inside a trained turn (the model learns an answer that stops mid-way, without its end tag)"
        if report.cut_inside_trained_turn
        else "outside trained turns"
    )
    out.print(
        f"--max-length {max_length:,} truncates this row: cuts {report.tokens_cut:,} tokens, "
        f"{report.trained_tokens_cut:,} of them trained; the cut falls {where}"
    )


def compare_templates(selection: Selection, ours: Template, tokenizer_dir: str, chosen: bool = False) -> int:
    """Render the selected rows (default: all) with our template and the tokenizer's; report the
    first difference (exit 1). A tokenizer template that is a known one (``known_template``) is
    named, and checked against our copy of it unless ``--template`` was ``chosen``."""
    from glmdata.render import KNOWN_TEMPLATES, TemplateError, known_template, load_template
    from glmdata.render import render as render_text

    try:
        theirs = load_template(tokenizer_dir)
    except TemplateError as exc:
        raise common.UserError(f"--check-template {tokenizer_dir}: {exc}") from None
    name = known_template(theirs)
    if name is None:
        common.err.print(
            escape(
                f"{theirs.origin} is not a known template (known: {', '.join(KNOWN_TEMPLATES)}); "
                "comparing with " + ("--template" if chosen else f"the default, {ours.origin}") + ". "
                "Choose the model's template with --template NAME"
            )
        )
    else:
        common.err.print(escape(f"{theirs.origin} is the known template {name}"))
        if not chosen:
            ours = load_template(name)
    selected, what = selection.results(default_all=True)
    checked = 0
    for result in selected:
        if result.row is None or result.rejected:
            continue
        checked += 1
        messages = result.row["messages"]
        for prompt in (False, True):
            a = render_text(messages, add_generation_prompt=prompt, template=ours)
            try:
                b = render_text(messages, add_generation_prompt=prompt, template=theirs)
            except TemplateError as exc:
                common.err.print(
                    f"[red]row {result.index}: the tokenizer's template fails to render: {escape(str(exc))}[/]"
                )
                return 1
            if a != b:
                _report_difference(result.index, a, b, tokenizer_dir, ours.origin, theirs.origin, prompt)
                return 1
    both = f"{ours.origin} and {theirs.origin}"
    common.err.print(
        "[green]identical[/]: "
        + escape(f"{checked:,} rows ({what}) render the same with {both}, with and without the generation prompt")
    )
    return 0


def _report_difference(index: int, a: str, b: str, tokenizer_dir: str, ours: str, theirs: str, prompt: bool) -> None:
    at = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))

    def context(text: str) -> str:
        return repr(text[max(0, at - 30) : at + 30])

    common.err.print(
        f"[red]row {index}: templates differ at character {at}[/]" + (" (with generation prompt)" if prompt else "")
    )
    common.err.print(escape(f"  ours   ({ours}): {context(a)}"))
    common.err.print(escape(f"  theirs ({theirs}): {context(b)}"))
    try:
        tok: Any = common.tokenizer_at(tokenizer_dir)
    except common.UserError:
        return
    ids_a = tok(a, add_special_tokens=False)["input_ids"]
    ids_b = tok(b, add_special_tokens=False)["input_ids"]
    k = next((i for i, (x, y) in enumerate(zip(ids_a, ids_b, strict=False)) if x != y), min(len(ids_a), len(ids_b)))

    def show(ids: list[int]) -> str:
        return f"{ids[k]} {tok.decode([ids[k]])!r}" if k < len(ids) else "end of text"

    common.err.print(escape(f"  first differing token: position {k}: ours {show(ids_a)}, theirs {show(ids_b)}"))
