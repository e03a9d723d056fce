"""``glmdata render``: a row as GLM-4 sees it, the trained parts marked, optionally token by token.

Kept apart from ``cli.py`` so that the core commands stay small; registered on the same app.
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape

from glmdata.cli import SHOW_FINDINGS, CallStyle, FromOpt, StyleOpt, UserError, _options, _run, app, err

# Visible markers for trained text when the output is not a terminal (no colour to show it).
TRAIN_OPEN, TRAIN_CLOSE = "⟦", "⟧"


def _select(path: str, options, row: int | None, rows: str | None, all_rows: bool) -> tuple[Iterator, str]:
    """The results to render and a description; out-of-range rows are a usage error."""
    from glmdata.convert import convert_file

    results = convert_file(path, options)
    if all_rows:
        return results, "all rows"
    if rows is not None:
        try:
            start_text, _, stop_text = rows.partition(":")
            start = int(start_text) if start_text else 0
            stop = int(stop_text) if stop_text else None
        except ValueError:
            raise UserError(f"--rows takes A:B (e.g. 0:10), not {rows!r}") from None
        if start < 0 or (stop is not None and stop < start):
            raise UserError(f"--rows {rows}: give 0 <= A <= B")
        return (r for r in results if r.index >= start and (stop is None or r.index < stop)), f"rows {rows}"
    index = 0 if row is None else row
    if index >= 0:
        for result in results:
            if result.index == index:
                return iter([result]), f"row {index}"
        count = _last_index + 1 if (_last_index := _count(path, options)) >= 0 else 0
        raise UserError(f"row {index} is out of range: {path} has {count} rows (0..{count - 1})" if count else f"{path} has no rows")
    tail: deque = deque(results, maxlen=min(-index, sys.maxsize))  # --row -10**30: out of range, not OverflowError
    if len(tail) < -index:
        raise UserError(f"row {index} is out of range: {path} has {len(tail)} rows")
    return iter([tail[0]]), f"row {tail[0].index}"


def _count(path: str, options) -> int:
    from glmdata.io import read_records

    last = -1
    for record in read_records(path):
        last = record.index
    return last


def _show_conversion(result) -> None:
    if result.repairs:
        names = sorted({name for name, _ in result.repairs})
        err.print(f"[dim]row {result.index}: converted from {result.format}; repairs: {', '.join(names)}[/]")
    for issue in result.issues:
        colour = "red" if issue.severity == "error" else "yellow"
        err.print(f"[{colour}]row {result.index} {escape(f'{issue.path}: {issue.message}')}[/] [dim]({issue.code})[/]")


def _styled(text: str, spans: list[tuple[int, int]], colour: bool):
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


@app.command()
def render(
    file: Annotated[str, typer.Argument(help="Messages JSONL (default: messages.jsonl, the output of convert), or any supported format, converted on the fly.")] = "messages.jsonl",
    row: Annotated[Optional[int], typer.Option("--row", help="Row to render (0-based; negative counts from the end). Default 0.")] = None,
    rows: Annotated[Optional[str], typer.Option("--rows", help="Render rows A:B as JSONL {\"text\": ...} on stdout.")] = None,
    all_rows: Annotated[bool, typer.Option("--all", help="Render every row as JSONL {\"text\": ...} on stdout.")] = False,
    raw: Annotated[bool, typer.Option("--raw", help="Print exactly the training text and nothing else.")] = False,
    generation_prompt: Annotated[bool, typer.Option("--generation-prompt", help="Render for inference: append the <|assistant|> tag (no trained spans).")] = False,
    template: Annotated[Optional[str], typer.Option("--template", help="Chat template: a .jinja file, a tokenizer_config.json or a tokenizer directory. Default: glm-4-9b-chat's.")] = None,
    train_on: Annotated[str, typer.Option("--train-on", help="assistant (the GLM-4 demo's masks), all (every token, as the tool-call tutorial), last (final assistant turn only).")] = "assistant",
    tokens: Annotated[bool, typer.Option("--tokens", help="Show the token table (position, token, id, label) and totals; needs --tokenizer.")] = False,
    tokenizer: Annotated[Optional[str], typer.Option("--tokenizer", help="Local tokenizer directory (e.g. ../shared/tokenizer/glm-4-9b-chat).")] = None,
    max_length: Annotated[Optional[int], typer.Option("--max-length", help="With --tokens: say whether this length truncates the row and what it cuts.")] = None,
    check_template: Annotated[Optional[str], typer.Option("--check-template", help="Tokenizer directory whose own chat template is compared with ours on the selected rows.")] = None,
    from_format: FromOpt = None,
    call_style: StyleOpt = CallStyle.native,
) -> None:
    """Show a row as GLM-4 sees it: special tokens highlighted, trained spans marked."""
    _run(lambda: _render(file, row, rows, all_rows, raw, generation_prompt, template, train_on, tokens, tokenizer, max_length, check_template, _options(from_format, call_style, [], False, False)))


def _render(file, row, rows, all_rows, raw, generation_prompt, template, train_on, tokens, tokenizer, max_length, check_template, options) -> int:
    from glmdata.render import (
        TRAIN_ON,
        NothingToTrain,
        TemplateError,
        load_template,
        render,
        render_spans,
    )

    if train_on not in TRAIN_ON:
        raise UserError(f"--train-on must be one of {', '.join(TRAIN_ON)}, not {train_on!r}")
    if max_length is not None and max_length <= 0:
        raise UserError("--max-length must be a positive number of tokens")
    if tokens and not tokenizer:
        raise UserError("--tokens needs --tokenizer PATH (a local tokenizer directory, e.g. ../shared/tokenizer/glm-4-9b-chat)")
    if file == "messages.jsonl" and not Path(file).exists():
        raise UserError("messages.jsonl not found: run `glmdata convert DATA -o messages.jsonl` first, or pass a file")
    try:
        chat_template = load_template(template)
    except TemplateError as exc:
        raise UserError(str(exc)) from None
    if check_template:
        return _check_template(file, options, row, rows, all_rows, chat_template, check_template)
    selected, _ = _select(file, options, row, rows, all_rows)
    many = rows is not None or all_rows
    status = 0
    selected_any = False
    unrendered = 0  # rows left out of --rows/--all output (rejected, or nothing to train)

    def left_out(message: str) -> None:
        nonlocal unrendered
        unrendered += 1
        if unrendered <= SHOW_FINDINGS:
            err.print(message)

    import orjson

    for result in selected:
        selected_any = True
        if not many:
            _show_conversion(result)
        if result.row is None or result.rejected:
            if many:
                left_out(f"[red]row {result.index} rejected:[/] " + escape("; ".join(f"{i.path}: {i.message}" for i in result.errors)))
            status = 1
            if not many:
                return 1
            continue
        messages = result.row["messages"]
        try:
            if generation_prompt:
                text, spans = render(messages, add_generation_prompt=True, template=chat_template), []
            else:
                text, spans = render_spans(messages, train_on=train_on, template=chat_template)
        except NothingToTrain as exc:
            left_out(f"[red]row {result.index}: {escape(str(exc))}[/]")
            status = 1
            continue
        except TemplateError as exc:
            raise UserError(str(exc)) from None
        if many:
            sys.stdout.buffer.write(orjson.dumps({"text": text}) + b"\n")
        elif raw:
            sys.stdout.write(text)
            sys.stdout.flush()
        elif tokens:
            _token_table(messages, text, spans, tokenizer, max_length, train_on, chat_template)
        else:
            from rich.console import Console

            out = Console(highlight=False, soft_wrap=True)
            colour = out.is_terminal
            out.print(_styled(text, spans, colour), markup=False)
            if not generation_prompt:
                legend = "trained text in green, special tokens in magenta" if colour else f"trained text between {TRAIN_OPEN} and {TRAIN_CLOSE}"
                err.print(f"[dim]row {result.index}: {len(text):,} characters, {sum(e - s for s, e in spans):,} trained ({escape(legend)}; train-on {escape(train_on)})[/]")
    if unrendered > SHOW_FINDINGS:
        err.print(f"[red]... and {unrendered - SHOW_FINDINGS:,} more rows not rendered[/] (`glmdata validate {escape(file)}` lists every finding)")
    if rows is not None and not selected_any:
        count = _count(file, options) + 1
        raise UserError(f"--rows {rows} selects no rows: {file} has {count} rows" + (f" (0..{count - 1})" if count else ""))
    return status


def _load_tokenizer(path: str) -> Any:
    from glmdata.tokenizer import TokenizerError, load_tokenizer

    try:
        return load_tokenizer(path)
    except TokenizerError as exc:
        raise UserError(str(exc)) from None


def _token_table(messages, text, spans, tokenizer_path, max_length, train_on, chat_template) -> None:
    from rich.console import Console
    from rich.table import Table

    from glmdata.masks import IGNORE_INDEX, tokenize, truncation_report

    tok = _load_tokenizer(tokenizer_path)
    encoded = tokenize(messages, tok, train_on=train_on, template=chat_template)
    table = Table("pos", "token", "id", "label", title="tokens (label -100 = not trained)", title_justify="left")
    for position, (token_id, label) in enumerate(zip(encoded["input_ids"], encoded["labels"])):
        piece = tok.decode([token_id])
        style = "green" if label != IGNORE_INDEX else None
        cut = max_length is not None and position >= max_length
        table.add_row(str(position), escape(repr(piece)[1:-1]), str(token_id), str(label), style="dim strike" if cut else style)  # [gMASK] is text, not markup
    out = Console(highlight=False)
    out.print(table)
    report = truncation_report(messages, tok, max_length, train_on=train_on, template=chat_template)
    out.print(f"tokens: {report.tokens:,}  trained tokens: {report.trained_tokens:,}")
    if max_length is not None:
        if report.truncated:
            where = "inside a trained turn (the model learns an answer that stops mid-way, without its end tag)" if report.cut_inside_trained_turn else "outside trained turns"
            out.print(f"--max-length {max_length:,} truncates this row: cuts {report.tokens_cut:,} tokens, {report.trained_tokens_cut:,} of them trained; the cut falls {where}")
        else:
            out.print(f"--max-length {max_length:,} keeps the whole row")


def _check_template(file, options, row, rows, all_rows, ours, tokenizer_dir) -> int:
    """Render the selected rows (default: all) with our template and the tokenizer's; report the first difference."""
    from glmdata.render import TemplateError, load_template, render

    try:
        theirs = load_template(tokenizer_dir)
    except TemplateError as exc:
        raise UserError(f"--check-template {tokenizer_dir}: {exc}") from None
    selected, what = _select(file, options, row, rows, all_rows or (row is None and rows is None))
    checked = 0
    for result in selected:
        if result.row is None or result.rejected:
            continue
        checked += 1
        messages = result.row["messages"]
        for prompt in (False, True):
            a = render(messages, add_generation_prompt=prompt, template=ours)
            try:
                b = render(messages, add_generation_prompt=prompt, template=theirs)
            except TemplateError as exc:
                err.print(f"[red]row {result.index}: the tokenizer's template fails to render: {escape(str(exc))}[/]")
                return 1
            if a != b:
                _report_difference(result.index, a, b, tokenizer_dir, ours.origin, theirs.origin, prompt)
                return 1
    err.print("[green]identical[/]: " + escape(f"{checked:,} rows ({what}) render the same with {ours.origin} and {theirs.origin}, with and without the generation prompt"))
    return 0


def _report_difference(index: int, a: str, b: str, tokenizer_dir: str, ours: str, theirs: str, prompt: bool) -> None:
    at = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    context = lambda s: repr(s[max(0, at - 30):at + 30])  # noqa: E731
    err.print(f"[red]row {index}: templates differ at character {at}[/]" + (" (with generation prompt)" if prompt else ""))
    err.print(escape(f"  ours   ({ours}): {context(a)}"))
    err.print(escape(f"  theirs ({theirs}): {context(b)}"))
    try:
        tok = _load_tokenizer(tokenizer_dir)
    except UserError:
        return
    ids_a = tok(a, add_special_tokens=False)["input_ids"]
    ids_b = tok(b, add_special_tokens=False)["input_ids"]
    k = next((i for i, (x, y) in enumerate(zip(ids_a, ids_b)) if x != y), min(len(ids_a), len(ids_b)))
    show = lambda ids: f"{ids[k]} {tok.decode([ids[k]])!r}" if k < len(ids) else "end of text"  # noqa: E731
    err.print(escape(f"  first differing token: position {k}: ours {show(ids_a)}, theirs {show(ids_b)}"))


@app.command("install-template")
def install_template_command(
    tokenizer_dir: Annotated[str, typer.Argument(help="Tokenizer directory to write the template into (chat_template.jinja; tokenizer_config.json's copy is updated if it has one).")],
    plain: Annotated[bool, typer.Option("--plain", help="Write the plain official template instead of the training variant with {% generation %} markers.")] = False,
    template: Annotated[Optional[str], typer.Option("--template", help="Write this template instead (.jinja, tokenizer_config.json or tokenizer directory).")] = None,
) -> None:
    """Write glmdata's GLM-4 template into a tokenizer, so training and inference render the same bytes.

    The default training variant carries {% generation %} markers, so that
    apply_chat_template(return_assistant_tokens_mask=True) and TRL's assistant_only_loss work for GLM-4.
    """
    _run(lambda: _install_template(tokenizer_dir, plain, template))


def _install_template(tokenizer_dir: str, plain: bool, template: str | None) -> int:
    from glmdata.render import TemplateError, install_template

    try:
        target = install_template(tokenizer_dir, training=not plain, template=template)
    except TemplateError as exc:
        raise UserError(str(exc)) from None
    err.print(escape(f"wrote {target}"))
    return 0
