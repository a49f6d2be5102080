"""Harvest an Item Report with celus-nigiri's COUNTER 5.1 client and print what it parsed.

Run by the Python of a virtual environment that has ``celus-nigiri`` (see
``tests/test_counter_harvest.py``), not by the project's own: this file imports nothing of
pirus-bridge. Usage: ``nigiri_harvest.py BASE_URL CUSTOMER_ID API_KEY BEGIN END``; prints one
JSON document ``{"status", "errors", "warnings", "records": [{"item_ids", "item", "metric",
"month", "value", "dimensions"}]}``.
"""

import json
import sys
import tempfile

from celus_nigiri.client import Sushi51Client


def ids(found: object) -> dict:
    """nigiri's Identifiers (slots, None where absent) as a plain dict."""
    names = getattr(found, "__slots__", ())
    return {n: getattr(found, n) for n in names if getattr(found, n, None) is not None}


def main() -> None:
    url, customer, key, begin, end = sys.argv[1:6]
    client = Sushi51Client(url, customer, extra_params={"api_key": key})
    with tempfile.TemporaryFile() as dump:
        report = client.get_report_data("ir", begin, end, output_content=dump)
        header, items = report.fd_to_dicts(dump)
        records = [
            {"item_ids": ids(r.item_ids), "item": r.item, "metric": r.metric,
             "month": r.start.isoformat()[:7], "value": r.value,
             "dimensions": r.dimension_data}
            for r in report.read_report(header, items)
        ]
    json.dump({"status": report.http_status_code,
               "errors": [str(e) for e in report.errors],
               "warnings": [str(w) for w in report.warnings],
               "records": records}, sys.stdout)


main()
