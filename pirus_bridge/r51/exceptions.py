"""COUNTER's exceptions, numbered as the Code of Practice R5.1 numbers them (Appendix D).

Table D.1 fixes each exception's code, its exact message and the HTTP status it travels with.
An exception with status 200 is a note inside a report's ``Exceptions`` header; any other stops
the request, and then exactly one is returned, "preferably the one with the lowest Exception
Code" (Appendix D).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pirus_bridge.exceptions import PirusBridgeError

# code: (message, HTTP status) — Table D.1, for the codes this service can raise.
TABLE_D1: dict[int, tuple[str, int]] = {
    1000: ("Service Not Available", 503),
    1010: ("Service Busy", 503),
    1030: ("Insufficient Information to Process Request", 400),
    2000: ("Requestor Not Authorized to Access Service", 401),
    2010: ("Requestor is Not Authorized to Access Usage for Institution", 403),
    2020: ("APIKey Invalid", 401),
    3020: ("Invalid Date Arguments", 400),
    3030: ("No Usage Available for Requested Dates", 200),
    3031: ("Usage Not Ready for Requested Dates", 200),
    3032: ("Usage No Longer Available for Requested Dates", 200),
    3050: ("Parameter Not Recognized in this Context", 200),
    3060: ("Invalid ReportFilter Value", 200),
    3062: ("Invalid ReportAttribute Value", 200),
    3063: ("Components Not Supported", 200),
}


class CounterException(PirusBridgeError):
    """One COUNTER exception: ``code`` from Table D.1, optional ``data`` saying what exactly."""

    def __init__(self, code: int, data: str | None = None) -> None:
        if code not in TABLE_D1:
            raise ValueError(f"not a COUNTER exception this service raises: {code}")
        self.code = code
        self.message, self.http_status = TABLE_D1[code]
        self.data = data
        super().__init__(self.text())

    @property
    def fatal(self) -> bool:
        """True when the request stops here (any HTTP status but 200)."""
        return self.http_status != 200

    def to_json(self) -> dict[str, Any]:
        """The COUNTER API's ``Exception`` object: ``Code``, ``Message`` and ``Data``."""
        out: dict[str, Any] = {"Code": self.code, "Message": self.message}
        if self.data:
            out["Data"] = self.data
        return out

    def text(self) -> str:
        """The tabular form, ``{Code}: {Message} ({Data})`` (CoP Table 3.f)."""
        return f"{self.code}: {self.message}" + (f" ({self.data})" if self.data else "")

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, CounterException)
                and (self.code, self.data) == (other.code, other.data))

    def __hash__(self) -> int:
        return hash((self.code, self.data))


def first_fatal(found: Iterable[CounterException]) -> CounterException | None:
    """Of several exceptions, the one a request must answer with: the fatal one with the
    lowest code, or None when every one is only a note."""
    fatal = [e for e in found if e.fatal]
    return min(fatal, key=lambda e: e.code) if fatal else None
