"""Who is on which list: one small JSON file, {"list": ["address", ...]}, rewritten whole on each change."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, List


class Members:
    def __init__(self, path: "str | os.PathLike[str]") -> None:
        self.path = Path(path)

    def _read(self) -> Dict[str, List[str]]:
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}

    def _write(self, lists: Dict[str, List[str]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".part")
        partial.write_text(json.dumps(lists, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(partial, self.path)

    def of(self, list_name: str) -> List[str]:
        return list(self._read().get(list_name, []))

    def is_member(self, list_name: str, address: str) -> bool:
        return address.lower() in self.of(list_name)

    def subscribe(self, list_name: str, address: str) -> bool:
        """Add ``address``; False when it was already there."""
        lists = self._read()
        members = lists.setdefault(list_name, [])
        if address.lower() in members:
            return False
        members.append(address.lower())
        self._write(lists)
        return True

    def unsubscribe(self, list_name: str, address: str) -> bool:
        """Remove ``address``; False when it was not there."""
        lists = self._read()
        if address.lower() not in lists.get(list_name, []):
            return False
        lists[list_name].remove(address.lower())
        self._write(lists)
        return True
