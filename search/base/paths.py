"""Where the commands write their files, relative to the folder they run in."""

from pathlib import Path

EXPORTS = Path("exports")  # exports/<study>/best.yaml, and what retraining writes beside it
REPORTS = Path("reports")  # reports/<study>.html
