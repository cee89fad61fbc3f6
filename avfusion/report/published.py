"""The published numbers (published.yaml) as a lookup by dotted id.

    pub = load_published()               # avfusion/report/published.yaml
    pub.value("T4.r1.linear")            # 53.08
    pub.source("T4.r1.linear")           # "paper Table 4: ... | row (1) PT ✓, Early, Local ✓ | column Linear Acc"
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

PUBLISHED_YAML = Path(__file__).with_name("published.yaml")
SECTIONS = ("tables", "text", "readme", "facts")


class PublishedError(ValueError):
    """A malformed published.yaml or an id that is not in it."""


@dataclass(frozen=True)
class PublishedEntry:
    value: Any            # float, int, bool, str, or None ("—" in the paper)
    source: str           # table, row and column (or the quoted sentence)


class Published:
    def __init__(self, data: dict, path: Path):
        self.path = path
        self.entries: dict[str, PublishedEntry] = {}
        self.tables: dict[str, dict] = {}
        unknown = set(data) - set(SECTIONS)
        if unknown:
            raise PublishedError(f"{path}: unknown top-level keys {sorted(unknown)}; expected {list(SECTIONS)}")
        for table_id, table in (data.get("tables") or {}).items():
            for key in ("source", "columns", "rows"):
                if key not in table:
                    raise PublishedError(f"{path}: tables.{table_id}: missing '{key}'")
            self.tables[table_id] = table
            for row_id, row in table["rows"].items():
                values = row.get("values") or {}
                extra = set(values) - set(table["columns"])
                if extra:
                    raise PublishedError(f"{path}: tables.{table_id}.rows.{row_id}: unknown columns {sorted(extra)}; "
                                         f"columns are {list(table['columns'])}")
                for col_id, col_label in table["columns"].items():
                    source = f"{table['source']} | row {row.get('label', row_id)} | column {col_label}"
                    self.entries[f"{table_id}.{row_id}.{col_id}"] = PublishedEntry(values.get(col_id), source)
        for section in ("text", "readme", "facts"):
            for key, item in (data.get(section) or {}).items():
                if not isinstance(item, dict) or "value" not in item or "source" not in item:
                    raise PublishedError(f"{path}: {section}.{key}: needs 'value' and 'source'")
                self.entries[f"{section}.{key}"] = PublishedEntry(item["value"], item["source"])

    def __contains__(self, ident: str) -> bool:
        return ident in self.entries

    def _entry(self, ident: str) -> PublishedEntry:
        try:
            return self.entries[ident]
        except KeyError:
            prefix = ident.rsplit(".", 1)[0]
            near = sorted(k for k in self.entries if k.startswith(prefix))[:8]
            raise PublishedError(f"{self.path}: no published value '{ident}'"
                                 + (f"; ids under '{prefix}': {near}" if near else "")) from None

    def value(self, ident: str) -> Any:
        return self._entry(ident).value

    def source(self, ident: str) -> str:
        return self._entry(ident).source

    def row_label(self, table_id: str, row_id: str) -> str:
        try:
            return self.tables[table_id]["rows"][row_id].get("label", row_id)
        except KeyError:
            raise PublishedError(f"{self.path}: no row '{table_id}.{row_id}'") from None

    def column_label(self, table_id: str, col_id: str) -> str:
        try:
            return self.tables[table_id]["columns"][col_id]
        except KeyError:
            raise PublishedError(f"{self.path}: no column '{table_id}.{col_id}'") from None


def load_published(path: str | Path = PUBLISHED_YAML) -> Published:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise PublishedError(f"{path}: file not found") from None
    except yaml.YAMLError as err:
        raise PublishedError(f"{path}: invalid YAML: {err}") from None
    return Published(data or {}, path)
