"""The DVC pipeline stages: thin typer scripts, `python -m stages.<name> --help`; the maths lives in wm/."""
