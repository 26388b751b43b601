"""The report's analyses, one command each (SPEC §4): ``python analyze.py task=<name>``."""
