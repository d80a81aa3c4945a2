"""Grading a class's notebooks executed with papermill: ``grade_report(folder)`` and the command line
``python -m kdlib.teaching report FOLDER``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas


def grade_report(folder: str | Path) -> pandas.DataFrame:
    """One row per executed notebook under ``folder`` (papermill outputs): checks passed and the first failure."""
    import nbformat
    import pandas as pd

    rows = []
    for path in sorted(Path(folder).rglob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        passed, error, ran = 0, None, False
        for cell in nb.cells:
            for output in cell.get("outputs", []):
                ran = True
                if output.get("output_type") == "stream":
                    passed += sum(line.startswith("✓") for line in output.get("text", "").splitlines())
                elif output.get("output_type") == "error" and error is None:
                    error = output
        status = "failed" if error is not None else ("passed" if ran else "not run")
        rows.append(
            {
                "notebook": str(path.relative_to(folder)),
                "checks_passed": passed,
                "status": status,
                "error": error.get("ename", "") if error is not None else "",
                "message": str(error.get("evalue", "")).splitlines()[0] if error is not None else "",
            }
        )
    return pd.DataFrame(rows, columns=["notebook", "checks_passed", "status", "error", "message"])


def main(argv: list[str] | None = None) -> int:
    """``python -m kdlib.teaching report FOLDER``: print the grade report; exit 1 when a notebook failed."""
    parser = argparse.ArgumentParser(prog="python -m kdlib.teaching", description=main.__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    report = sub.add_parser("report", help="summarise executed exercise notebooks (papermill outputs)")
    report.add_argument("folder")
    args = parser.parse_args(argv)
    table = grade_report(args.folder)
    if table.empty:
        print(f"no notebooks under {args.folder}")
        return 1
    width = max(len(name) for name in table["notebook"])
    for row in table.itertuples():
        line = f"{row.notebook:<{width}}  {row.status:<7} {row.checks_passed} ✓"
        if row.error:
            message = row.message if len(row.message) <= 110 else row.message[:109] + "…"
            line += f"  {row.error}: {message}"
        print(line)
    failed = int((table["status"] != "passed").sum())
    print(f"{len(table) - failed} of {len(table)} notebooks passed every check")
    return int(failed > 0)
