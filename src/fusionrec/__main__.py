"""Usage: python -m fusionrec COMMAND ..."""

from fusionrec.cli import main

main()
