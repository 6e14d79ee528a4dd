"""Write docs/review-table.md: every text the cards can say, with its source, from the built-in policy and mandate
files. Run after changing a policy or mandate file or cds/policy/wording.py: `.venv/bin/python scripts/review_table.py`
(the tests fail while the file is not current)."""

from pathlib import Path

from cds.policy import load_policies
from cds.policy.review import review_table

TABLE = Path(__file__).resolve().parent.parent / "docs" / "review-table.md"

if __name__ == "__main__":
    TABLE.write_text(review_table(load_policies()), encoding="utf-8")
    print(f"wrote {TABLE}")
