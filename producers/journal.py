"""A member's publication journal: the ids of the indicators its SDK has published, each
written when Kafka acknowledged it, so a retraction of an id this member never published
(a typo, a pasted id of another member's record) is refused before anything is sent.

The router would deliver such a retraction to no one (its delivery ledger is keyed by
source and indicator, :mod:`broker.ledger`), but it would take it silently; the journal
tells the member at once. It is a text file, one id per line, only ever appended to: appends of a
line are atomic, so parallel imports may share it. An indicator published from another
machine, or before the journal existed, is not in it: ``action-publish retract
--unlisted`` says so on purpose.
"""

from __future__ import annotations

from pathlib import Path

from broker.errors import UnpublishedIndicatorError


class PublicationJournal:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._known: set[str] | None = None

    def record(self, indicator_id: str) -> None:
        """Note an indicator Kafka acknowledged."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as out:
            out.write(indicator_id + "\n")
        if self._known is not None:
            self._known.add(indicator_id)

    def __contains__(self, indicator_id: object) -> bool:
        if self._known is None:
            try:
                text = self.path.read_text(encoding="utf-8")
            except FileNotFoundError:
                text = ""
            self._known = {line.strip() for line in text.splitlines() if line.strip()}
        return indicator_id in self._known

    def check_retractable(self, member: str, indicator_id: str) -> None:
        """Refuse a retraction of an indicator this journal does not list."""
        if indicator_id not in self:
            raise UnpublishedIndicatorError(
                f"{member} has not published indicator {indicator_id} "
                f"(it is not in the publication journal {self.path})",
                hint="retract only your own indicators; one published from another machine "
                "is retracted with --unlisted (or ACTION_JOURNAL_FILE naming that journal)",
            )
