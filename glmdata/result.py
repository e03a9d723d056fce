"""The outcome of converting one input row: kept, rejected, or dropped as a duplicate."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from glmdata.issues import Issue
from glmdata.models import MessagesRow


@dataclass(slots=True)
class Result:
    """The outcome for one input row."""

    index: int
    line: int | None = None
    raw: bytes = b""
    format: str | None = None
    row: MessagesRow | None = None
    encoded: bytes = b""  #: the row as compact JSON, serialized once: written and hashed as is
    issues: list[Issue] = field(default_factory=list)
    repairs: list[tuple[str, str]] = field(default_factory=list)
    rejected: bool = False
    duplicate_of: int | None = None
    deduplicated: bool = False

    @property
    def ok(self) -> bool:
        """True when the row is written to the output."""
        return not self.rejected and not self.deduplicated

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "error"]

    @property
    def warnings(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "warning"]

    def reject_record(self, source: str | None = None) -> dict:
        """The rejects-file line: where the row was, why it was rejected, and its verbatim text."""
        record: dict[str, Any] = {"index": self.index}
        if self.line is not None:
            record["line"] = self.line
        if source is not None:
            record["source"] = source
        record["errors"] = [i.to_dict() for i in self.issues if i.severity == "error" or self.rejected]
        try:
            record["raw"] = self.raw.decode("utf-8")
        except UnicodeDecodeError:
            import base64

            record["raw_base64"] = base64.b64encode(self.raw).decode("ascii")
        return record
